package linefile_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/locky-edge/locky/gateway/linefile"
)

func TestRead(t *testing.T) {
	f := func(content string, wantLines []string, wantErr string) {
		t.Helper()
		path := filepath.Join(t.TempDir(), "file")
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		var got []string
		err := linefile.Read(path, "the test file", func(n int, line string) error {
			if line == "bad" {
				return errors.New("a bad line")
			}
			got = append(got, fmt.Sprintf("%d:%s", n, line))
			return nil
		})
		if wantErr == "" && err != nil || wantErr != "" && (err == nil || !strings.Contains(err.Error(), wantErr)) {
			t.Fatalf("Read(%q): error %v; want %q", content, err, wantErr)
		}
		if wantErr == "" && strings.Join(got, "|") != strings.Join(wantLines, "|") {
			t.Errorf("Read(%q): lines %q; want %q", content, got, wantLines)
		}
	}
	f("a\n\n  # comment\n  b = 1  \n", []string{"1:a", "4:b = 1"}, "")
	f("", nil, "")
	f("a\n#x\nbad\n", nil, "file:3: a bad line")
	if err := linefile.Read(filepath.Join(t.TempDir(), "missing"), "the test file", nil); err == nil || !strings.Contains(err.Error(), "cannot read the test file") {
		t.Errorf("Read of a missing file: %v; want it named", err)
	}
}
