// Package linefile reads the line files of the gateway's configuration (the
// --config file, the --mqtt-users file): one entry per line, blank lines and
// lines starting with # skipped, every mistake named path:line.
//
// Its place in the layering: part of the assembly (gateway/), imported by the
// gateway's configuration and its broker; it imports nothing of the locker.
package linefile

import (
	"bufio"
	"fmt"
	"os"
	"strings"
)

// Read calls fn with each entry of the file at path, trimmed, and its line
// number. An error of fn is returned as "path:n: err"; what names the file in
// the error of a file that cannot be read ("the MQTT users file").
func Read(path, what string, fn func(n int, line string) error) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("cannot read %s: %w", what, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if err := fn(n, line); err != nil {
			return fmt.Errorf("%s:%d: %w", path, n, err)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("cannot read %s %s: %w", what, path, err)
	}
	return nil
}
