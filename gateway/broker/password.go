package broker

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
)

// Argon2Params are the costs of an argon2id password hash.
type Argon2Params struct {
	Memory  uint32 // KiB
	Time    uint32 // passes over the memory
	Threads uint8
}

// DefaultArgon2 returns the costs `locky-gateway passwd` writes: OWASP's
// argon2id minimum (19 MiB, 2 passes, 1 thread). On a Raspberry Pi one check
// takes a fraction of a second and the broker runs at most maxHashing at a
// time, so a burst of logins costs at most 2 × 19 MiB of a 1 GB board.
func DefaultArgon2() Argon2Params { return Argon2Params{Memory: 19 * 1024, Time: 2, Threads: 1} }

// The bounds a users file's hash costs must lie in: below, it is no argon2id
// hash; above, one login would cost the board too much.
const (
	maxArgon2Memory  = 64 * 1024 // KiB
	maxArgon2Time    = 10
	maxArgon2Threads = 4
	saltLen, keyLen  = 16, 32
)

// HashPassword returns the argon2id hash of password with a fresh random
// salt, as a PHC string: $argon2id$v=19$m=19456,t=2,p=1$salt$hash.
func HashPassword(password string, p Argon2Params) (string, error) {
	if err := p.check(); err != nil {
		return "", err
	}
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("cannot draw a salt: %w", err)
	}
	key := argon2.IDKey([]byte(password), salt, p.Time, p.Memory, p.Threads, keyLen)
	return passwordHash{params: p, salt: salt, key: key}.String(), nil
}

func (p Argon2Params) check() error {
	switch {
	case p.Threads < 1 || p.Threads > maxArgon2Threads:
		return fmt.Errorf("argon2id p=%d: want 1 to %d threads", p.Threads, maxArgon2Threads)
	case p.Time < 1 || p.Time > maxArgon2Time:
		return fmt.Errorf("argon2id t=%d: want 1 to %d passes", p.Time, maxArgon2Time)
	case p.Memory < 8*uint32(p.Threads) || p.Memory > maxArgon2Memory:
		return fmt.Errorf("argon2id m=%d: want %d to %d KiB", p.Memory, 8*uint32(p.Threads), maxArgon2Memory)
	}
	return nil
}

// passwordHash is a parsed PHC argon2id string.
type passwordHash struct {
	params    Argon2Params
	salt, key []byte
}

// errLegacyHash is returned for a users-file line with the unsalted SHA-256
// of the password that earlier versions used.
var errLegacyHash = errors.New("the password hash is an unsalted SHA-256, which is no longer accepted")

func parsePasswordHash(s string) (passwordHash, error) {
	if len(s) == 64 && strings.Trim(s, "0123456789abcdefABCDEF") == "" {
		return passwordHash{}, errLegacyHash
	}
	parts := strings.Split(s, "$")
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" {
		return passwordHash{}, errors.New("the password hash is no argon2id PHC string ($argon2id$v=19$m=…,t=…,p=…$salt$hash)")
	}
	if parts[2] != "v="+strconv.Itoa(argon2.Version) {
		return passwordHash{}, fmt.Errorf("argon2id version %q: want v=%d", parts[2], argon2.Version)
	}
	var h passwordHash
	kv := strings.Split(parts[3], ",")
	if len(kv) != 3 {
		return passwordHash{}, fmt.Errorf("argon2id parameters %q: want m=…,t=…,p=…", parts[3])
	}
	for i, name := range []string{"m", "t", "p"} {
		v, ok := strings.CutPrefix(kv[i], name+"=")
		n, err := strconv.ParseUint(v, 10, 32)
		if !ok || err != nil || (v[0] == '0' && len(v) > 1) {
			return passwordHash{}, fmt.Errorf("argon2id parameters %q: want m=…,t=…,p=… in decimal", parts[3])
		}
		switch name {
		case "m":
			h.params.Memory = uint32(n)
		case "t":
			h.params.Time = uint32(n)
		case "p":
			if n > 255 {
				n = 0 // out of range: refused by check
			}
			h.params.Threads = uint8(n)
		}
	}
	if err := h.params.check(); err != nil {
		return passwordHash{}, err
	}
	var err error
	b64 := base64.RawStdEncoding.Strict()
	if h.salt, err = b64.DecodeString(parts[4]); err != nil || len(h.salt) < 8 {
		return passwordHash{}, errors.New("argon2id salt: want at least 8 bytes in unpadded base64")
	}
	if h.key, err = b64.DecodeString(parts[5]); err != nil || len(h.key) < 16 || len(h.key) > 64 {
		return passwordHash{}, errors.New("argon2id hash: want 16 to 64 bytes in unpadded base64")
	}
	return h, nil
}

// String returns h as a PHC string.
func (h passwordHash) String() string {
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version,
		h.params.Memory, h.params.Time, h.params.Threads, b64.EncodeToString(h.salt), b64.EncodeToString(h.key))
}

// matches reports in constant time whether password has the hash h.
func (h passwordHash) matches(password []byte) bool {
	key := argon2.IDKey(password, h.salt, h.params.Time, h.params.Memory, h.params.Threads, uint32(len(h.key)))
	return subtle.ConstantTimeCompare(key, h.key) == 1
}
