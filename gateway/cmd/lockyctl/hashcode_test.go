package main

import (
	"bytes"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/locky-edge/locky/gateway/testenv"
	"github.com/locky-edge/locky/handlers/contract"
	"github.com/locky-edge/locky/handlers/store"
	"github.com/locky-edge/locky/handlers/store/storetest"
)

const testCodeKey = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

func writeKeyFile(t *testing.T, mode os.FileMode) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "code.key")
	if err := os.WriteFile(path, []byte(testCodeKey+"\n"), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // whatever the umask
		t.Fatal(err)
	}
	return path
}

// TestHashCodeOpensTheLockersDoor sends a reservation whose codes are the
// hashes lockyctl printed to a store with the same key: the plain codes then
// find it, as they would at the locker's screen.
func TestHashCodeOpensTheLockersDoor(t *testing.T) {
	keyFile := writeKeyFile(t, 0o600)
	code, out, errOut := lockyctl(t, "hash-code", "482913", "--code-key-file", keyFile, "193284") // flags among the codes
	if code != exitOK {
		t.Fatalf("hash-code: exit %d, stderr %q", code, errOut)
	}
	var stdin bytes.Buffer
	stdin.WriteString("777000\r\n")
	var fromStdin bytes.Buffer
	if err := hashCode(keyFile, nil, &stdin, &fromStdin); err != nil {
		t.Fatalf("hash-code from stdin: %v", err)
	}
	hashes := strings.Fields(out + fromStdin.String())
	if len(hashes) != 3 {
		t.Fatalf("hash-code printed %q; want one hash per code", out+fromStdin.String())
	}

	key, err := hex.DecodeString(testCodeKey)
	if err != nil {
		t.Fatal(err)
	}
	s := storetest.Open(t, store.Config{Path: filepath.Join(t.TempDir(), "db"), CodeKey: key, Logger: testenv.Logger(t)})
	if _, err := s.EnsureDoors(1, "M"); err != nil {
		t.Fatal(err)
	}
	r := contract.Reservation{ID: "R1", Version: 1, Door: 1, DepositHash: hashes[0], PickupHash: hashes[1], CourierHash: hashes[2]}
	if _, err := s.UpsertReservation(time.Now(), "m-1", r, time.Minute); err != nil {
		t.Fatal(err)
	}
	f := func(c, want string) {
		t.Helper()
		got, kind, err := s.LookupCode(c)
		if err != nil || got == nil || got.ID != "R1" || kind != want {
			t.Errorf("LookupCode(%s): got %v, %q, %v; want R1, %q", c, got, kind, err, want)
		}
	}
	f("482913", contract.KindDeposit)
	f("193284", contract.KindPickup)
	f("777000", contract.KindCourier)
}

func TestHashCodeRefusals(t *testing.T) {
	f := func(wantCode int, wantErr string, args ...string) {
		t.Helper()
		code, out, errOut := lockyctl(t, append([]string{"hash-code"}, args...)...)
		if code != wantCode || !strings.Contains(errOut, wantErr) || out != "" {
			t.Errorf("hash-code %q: exit %d, stdout %q, stderr %q; want exit %d, nothing printed, stderr containing %q",
				args, code, out, errOut, wantCode, wantErr)
		}
	}
	open := writeKeyFile(t, 0o644)
	f(exitUsage, "--code-key-file is required", "482913")
	f(exitFail, "chmod 600 "+open, "--code-key-file", open, "482913")
	f(exitFail, "no such file", "--code-key-file", filepath.Join(t.TempDir(), "missing"), "482913")
	f(exitUsage, "digits only", "--code-key-file", writeKeyFile(t, 0o400), "4829 13")
}
