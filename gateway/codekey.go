package gateway

import (
	"crypto/hmac"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// codeKeys are the keys the store hashes and looks up codes with.
type codeKeys struct {
	current       []byte
	previous      []byte    // nil unless a rotation is under way
	previousUntil time.Time // zero: the previous key is accepted until it is removed
}

// loadCodeKeys returns the configured code keys: each from its option, its
// file or, for the current key in dev mode, the key generated into the data
// dir. It logs what an operator must know: a key exposed on the command line
// or in an open config file, and a rotation under way.
func loadCodeKeys(cfg Config, log *slog.Logger) (codeKeys, error) {
	var keys codeKeys
	var err error
	switch {
	case cfg.CodeKey != "":
		keys.current, err = parseCodeKey(cfg.CodeKey)
	case cfg.CodeKeyFile != "":
		keys.current, err = ReadCodeKeyFile(cfg.CodeKeyFile)
	default:
		keys.current, err = devCodeKey(cfg, log)
	}
	if err != nil {
		return keys, err
	}
	switch {
	case cfg.CodeKeyPrevious != "":
		keys.previous, err = parseCodeKey(cfg.CodeKeyPrevious)
	case cfg.CodeKeyPreviousFile != "":
		keys.previous, err = ReadCodeKeyFile(cfg.CodeKeyPreviousFile)
	}
	if err != nil {
		return keys, fmt.Errorf("the previous code key: %w", err)
	}
	if keys.previous != nil && hmac.Equal(keys.previous, keys.current) {
		return keys, errors.New("the previous code key is the current one: set the new key as --code-key-file, the old one as --code-key-previous-file")
	}
	keys.previousUntil = cfg.CodeKeyPreviousUntil
	if !cfg.Dev {
		if cfg.keysOnCommandLine != "" {
			log.Warn("a code key is on the command line, where every local user can read it in /proc/PID/cmdline: give it in a file with --code-key-file (mode 0600) or in the environment (LOCKY_CODE_KEY) instead",
				"options", cfg.keysOnCommandLine, "cmdline", fmt.Sprintf("/proc/%d/cmdline", os.Getpid()))
		}
		if cfg.keysInOpenFile != "" {
			log.Warn("a code key is in a config file that group or other may read: chmod 600 it, or move the key to a file of mode 0600 given with code-key-file",
				"file", cfg.keysInOpenFile)
		}
	}
	switch {
	case keys.previous == nil:
	case keys.previousUntil.IsZero():
		log.Info("code key rotation: codes hashed under the previous key open their doors until the previous key is removed from the configuration; locky_store_previous_code_key_matches_total counts them")
	case time.Now().Before(keys.previousUntil):
		log.Info("code key rotation: codes hashed under the previous key open their doors until --code-key-previous-until; locky_store_previous_code_key_matches_total counts them",
			"until", keys.previousUntil)
	default:
		log.Warn("the previous code key's overlap is over by this clock: codes hashed only under it no longer open; remove it from the configuration",
			"until", keys.previousUntil, "now", time.Now().UTC())
	}
	return keys, nil
}

// ReadCodeKeyFile reads a code key from a file holding its hex digits
// (surrounding white space ignored), as the gateway's --code-key-file. It
// refuses a file that group or other may read, except a systemd credential
// (a file under $CREDENTIALS_DIRECTORY, which only the service can read).
func ReadCodeKeyFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read the code key file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("cannot read the code key file: %w", err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 && !inCredentialsDir(path, os.Getenv("CREDENTIALS_DIRECTORY")) {
		return nil, fmt.Errorf("the code key file %s may be read by group or other (mode %04o): chmod 600 %s", path, perm, path)
	}
	raw, err := io.ReadAll(io.LimitReader(f, 4096))
	if err != nil {
		return nil, fmt.Errorf("cannot read the code key file %s: %w", path, err)
	}
	k, err := parseCodeKey(string(raw))
	if err != nil {
		return nil, fmt.Errorf("the code key file %s: %w", path, err)
	}
	return k, nil
}

// inCredentialsDir reports whether path lies in dir, systemd's private
// directory of the service's credentials (empty: not under systemd).
func inCredentialsDir(path, dir string) bool {
	if dir == "" {
		return false
	}
	rel, err := filepath.Rel(dir, path)
	return err == nil && filepath.IsLocal(rel)
}

// parseCodeKey decodes a code key written in hex: at least 16 bytes.
func parseCodeKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, errors.New("no key: want hex digits, at least 32 (16 bytes); make one with `openssl rand -hex 32`")
	}
	k, err := hex.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("not hex: %w", err)
	}
	if len(k) < 16 {
		return nil, fmt.Errorf("%d bytes; use at least 16 (32 hex digits)", len(k))
	}
	return k, nil
}

// devCodeKey returns the dev mode key in the data dir, generated on first
// start with mode 0600.
func devCodeKey(cfg Config, log *slog.Logger) ([]byte, error) {
	path := filepath.Join(cfg.DataDir, "code.key")
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		k := make([]byte, 32)
		if _, err := rand.Read(k); err != nil {
			return nil, err
		}
		if err := writeSynced(path, []byte(hex.EncodeToString(k)+"\n")); err != nil {
			return nil, fmt.Errorf("cannot write the dev code key %q: %w", path, err)
		}
		log.Warn("dev mode: generated a code key; production lockers get theirs from --code-key-file", "path", path)
		return k, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cannot read the dev code key %q: %w", path, err)
	}
	k, err := parseCodeKey(string(raw))
	if err != nil {
		return nil, fmt.Errorf("the dev code key %q is damaged (%w); restore it from a backup: without it no stored code matches", path, err)
	}
	return k, nil
}

// writeSynced writes a new file of mode 0600 durably: the data is synced
// before the file gets its name, and the name before it returns, so a power
// cut leaves either no key or the whole key (and never a key that the codes
// stored after it do not match).
func writeSynced(path string, data []byte) error {
	tmp := path + ".new"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	dir, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer dir.Close()
	return dir.Sync()
}

// prepareDataDir creates the data dir with mode 0700, or makes an existing
// one private: it holds the database and maybe the dev code key.
func prepareDataDir(dir string, log *slog.Logger) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("cannot create the data dir %q: %w", dir, err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("cannot use the data dir %q: %w", dir, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("the data dir %q is not a directory: set --data-dir to a directory", dir)
	}
	perm := fi.Mode().Perm()
	if perm&0o077 == 0 {
		return nil
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("the data dir %q may be read by group or other (mode %04o) and cannot be made private: run `chmod 700 %s` as its owner or set --data-dir to a private directory: %w",
			dir, perm, dir, err)
	}
	log.Warn("the data dir was open to group or other: made it private (mode 0700)", "path", dir, "was", fmt.Sprintf("%04o", perm))
	return nil
}
