package main

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/locky-edge/locky/gateway"
	"github.com/locky-edge/locky/handlers/contract"
	"github.com/locky-edge/locky/handlers/store"
)

// hashCode prints, for each code, the hex HMAC-SHA256 under a locker's code
// key exactly as the locker computes it: what the back-end sends as
// deposit_hash, pickup_hash or courier_hash. The codes are the arguments or,
// without any, the lines of stdin (which keeps them out of the process list).
func hashCodeCommand(fs *flag.FlagSet) func(context.Context, *call) error {
	keyFile := fs.String("code-key-file", "", "the locker's code key `file`, hex, mode 0600 (required)")
	return func(_ context.Context, c *call) error { return hashCode(*keyFile, c.args, c.stdin, c.stdout) }
}

func hashCode(keyFile string, codes []string, stdin io.Reader, stdout io.Writer) error {
	if keyFile == "" {
		return usageError{errors.New("--code-key-file is required: the file of the locker's code key (hex, mode 0600)")}
	}
	key, err := gateway.ReadCodeKeyFile(keyFile)
	if err != nil {
		return err
	}
	if len(codes) == 0 {
		sc := bufio.NewScanner(stdin)
		for sc.Scan() {
			if line := strings.TrimRight(sc.Text(), "\r"); line != "" {
				codes = append(codes, line)
			}
		}
		if err := sc.Err(); err != nil {
			return fmt.Errorf("cannot read the codes from stdin: %w", err)
		}
		if len(codes) == 0 {
			return usageError{errors.New("no code: give codes as arguments or one per line on stdin")}
		}
	}
	for _, code := range codes {
		if err := contract.CheckCode(code); err != nil {
			return usageError{fmt.Errorf("%q: %w; the locker would never match its hash", code, err)}
		}
	}
	for _, code := range codes {
		if _, err := fmt.Fprintln(stdout, hex.EncodeToString(store.HashCode(key, code))); err != nil {
			return err
		}
	}
	return nil
}
