package store_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/locky-edge/locky/handlers/contract"
	"github.com/locky-edge/locky/handlers/store"
)

func fixtureKey() []byte {
	key := make([]byte, 32)
	for i := range key {
		key[i] = byte(i)
	}
	return key
}

// copyFixture copies testdata/name into a temporary file.
func copyFixture(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "locky.db")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestAnOlderReleasesDatabaseOpens: the database the release before the
// format version wrote opens, keeps its reservations and codes, is migrated
// to FormatVersion and passes the checker.
func TestAnOlderReleasesDatabaseOpens(t *testing.T) {
	path := copyFixture(t, "format0.db")
	s, err := store.Open(store.Config{Path: path, CodeKey: fixtureKey()})
	if err != nil {
		t.Fatalf("Open of the older release's database: %v", err)
	}
	r, kind, err := s.LookupCode("111111")
	if err != nil || r == nil || r.ID != "R1" || kind != contract.KindDeposit || r.Status != contract.StatusArriving {
		t.Errorf("code 111111: %+v %q %v; want R1's deposit code, arriving", r, kind, err)
	}
	if r, err := s.Reservation("R2"); err != nil || r == nil || r.Status != contract.StatusStored {
		t.Errorf("R2: %+v %v; want stored", r, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := store.CheckFile(path); err != nil {
		t.Errorf("database check after the migration: %v", err)
	}
	if v := formatOf(t, path); v != store.FormatVersion {
		t.Errorf("format after Open %d; want %d", v, store.FormatVersion)
	}
}

// TestANewerFormatIsRefused: after a rollback, the older binary meets a
// database of a newer format: it refuses to open it, naming both versions
// and what to do, and changes nothing of it.
func TestANewerFormatIsRefused(t *testing.T) {
	path := copyFixture(t, "format0.db")
	s, err := store.Open(store.Config{Path: path, CodeKey: fixtureKey()})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	setFormat(t, path, store.FormatVersion+1)
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	_, err = store.Open(store.Config{Path: path, CodeKey: fixtureKey()})
	if !errors.Is(err, store.ErrNewerFormat) {
		t.Fatalf("Open of a newer format: %v; want ErrNewerFormat", err)
	}
	for _, want := range []string{"format 2", "format 1 at most", "newer release"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the refusal %q does not say %q", err, want)
		}
	}
	after, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(before) != string(after) {
		t.Error("the refused database was changed")
	}
}

func formatOf(t *testing.T, path string) uint64 {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var v uint64
	err = db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("meta")).Get([]byte("format"))
		for _, c := range b {
			v = v<<8 | uint64(c)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func setFormat(t *testing.T, path string, v uint64) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b := make([]byte, 8)
		for i := 7; i >= 0; i-- {
			b[i] = byte(v)
			v >>= 8
		}
		return tx.Bucket([]byte("meta")).Put([]byte("format"), b)
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
}
