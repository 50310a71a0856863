// Package storetest opens stores for tests: each is closed when its test
// ends, and its database file is then checked with store.CheckFile, so that
// every test that writes a database also shows that it left it consistent.
//
// Its place in the layering: test support beside the store; it imports only
// the store, and the tests of every layer above it may use it.
package storetest

import (
	"testing"

	"github.com/locky-edge/locky/handlers/store"
)

// Open opens a store with cfg; a failure stops the test. When the test ends,
// the store is closed (a test may close it earlier: Close is idempotent) and
// the file at cfg.Path is checked; a failure of either fails the test.
func Open(t testing.TB, cfg store.Config) *store.Store {
	t.Helper()
	s, err := store.Open(cfg)
	if err != nil {
		t.Fatalf("cannot open the store: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("closing the store: %v", err)
		}
		if err := store.CheckFile(cfg.Path); err != nil {
			t.Errorf("database check of %s: %v", cfg.Path, err)
		}
	})
	return s
}
