package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/eclipse/paho.golang/paho"

	"github.com/locky-edge/locky/gateway"
	"github.com/locky-edge/locky/handlers/contract"
	"github.com/locky-edge/locky/handlers/store"
)

// auditCommand is audit: it prints a locker's audit trail of door openings
// and the verification of the chain that seals it: on a break it names the
// first bad record and fails. With --locker it asks the running locker
// through the cloud broker (locky/down/audit, answered on locky/up/audit),
// page by page; the locker verifies the chain with its own code keys. With --data-dir it reads the
// database file without writing to it; the gateway holds that file while it
// runs, so this is for a stopped gateway or a copy of its data dir (an SD
// card taken out, a backup), and it needs the locker's code key.
func auditCommand(fs *flag.FlagSet) func(context.Context, *call) error {
	locker := fs.String("locker", "", "the `id` of the running locker to ask through the cloud broker (--url)")
	after := fs.Uint64("after", 0, "with --locker: only the records after this `seq` (the last one you have)")
	dir := fs.String("data-dir", "", "the data `dir` of a stopped locker, or a copy of it, holding locky.db")
	keyFile := fs.String("code-key-file", "", "with --data-dir: the locker's code key `file`, hex, mode 0600 (default: the dev key in the data dir)")
	prevFile := fs.String("code-key-previous-file", "", "with --data-dir, during a key rotation: the previous code key's `file`, so that records sealed before it verify too")
	asJSON := fs.Bool("json", false, "print the records as JSON lines")
	return func(ctx context.Context, c *call) error {
		switch {
		case (*locker == "") == (*dir == ""):
			return usageError{errors.New("give --locker ID (a running locker, through the cloud broker) or --data-dir DIR (a stopped one), and nothing else")}
		case *locker != "" && (*keyFile != "" || *prevFile != ""):
			return usageError{errors.New("--code-key-file and --code-key-previous-file go with --data-dir: through the cloud, the locker verifies with its own keys")}
		case *dir != "" && *after != 0:
			return usageError{errors.New("--after goes with --locker: --data-dir reads and verifies the whole trail")}
		case *locker != "" && !validID(*locker):
			return usageError{errors.New("--locker may not contain '/', '+' or '#'")}
		case *locker != "":
			return auditRemote(ctx, c.o, *locker, *after, *asJSON, c.stdout)
		}
		return auditFile(*dir, *keyFile, *prevFile, *asJSON, c.stdout)
	}
}

// auditFile prints and verifies the trail in the database file of dir.
func auditFile(dir, keyFile, prevFile string, asJSON bool, stdout io.Writer) error {
	if keyFile == "" {
		keyFile = filepath.Join(dir, "code.key")
	}
	key, err := gateway.ReadCodeKeyFile(keyFile)
	if err != nil {
		return fmt.Errorf("%w (the trail is sealed under the locker's code key: give its file with --code-key-file)", err)
	}
	keys := [][]byte{key}
	if prevFile != "" {
		prev, err := gateway.ReadCodeKeyFile(prevFile)
		if err != nil {
			return err
		}
		keys = append(keys, prev)
	}
	entries, report, verr := store.ReadAuditFile(filepath.Join(dir, "locky.db"), time.Second, keys...)
	if entries == nil && verr != nil && !errors.Is(verr, store.ErrAuditBroken) {
		return verr
	}
	records := make([]contract.AuditRecord, len(entries))
	for i, e := range entries {
		records[i] = contract.AuditRecord{Seq: e.Seq, At: e.At, Door: e.Door, Reservation: e.Reservation, Kind: e.Kind,
			Result: e.Result, Reason: e.Reason, RequestID: e.RequestID, Sealed: e.Sealed}
	}
	if err := printAudit(stdout, records, asJSON); err != nil {
		return err
	}
	if verr != nil {
		return verr
	}
	printIntact(stdout, contract.AuditSummary{Records: report.Records, Unsealed: report.Unsealed,
		AnchorSeq: report.AnchorSeq, HeadSeq: report.HeadSeq}, records, 0)
	return nil
}

// auditRemote asks a running locker for its trail after seq after, page by
// page, prints it and fails if the locker reports the chain broken.
func auditRemote(ctx context.Context, o options, locker string, after uint64, asJSON bool, stdout io.Writer) error {
	c, err := dial(ctx, o)
	if err != nil {
		return err
	}
	defer c.close()
	prefix := "lockers/" + locker + "/"
	for _, f := range []string{prefix + "up/audit", prefix + "up/acks"} {
		if err := c.subscribe(ctx, o, f); err != nil {
			return err
		}
	}
	var records []contract.AuditRecord
	var first, last contract.AuditReply // the first reply that found a break; the last reply
	for from := after; ; {
		r, err := c.askAudit(ctx, o, locker, from)
		if err != nil {
			return err
		}
		records = append(records, r.Records...)
		if !r.Verified && first.MsgID == "" {
			first = r
		}
		last = r
		if !r.More {
			break
		}
		if r.Next <= from {
			return fmt.Errorf("locker %s answered %s with more records but none after record %d: it cannot be paged; read its data dir while it is stopped", locker, r.MsgID, from)
		}
		from = r.Next
	}
	if err := printAudit(stdout, records, asJSON); err != nil {
		return err
	}
	if first.MsgID != "" {
		return fmt.Errorf("locker %s reports its audit trail broken: %s", locker, first.Break)
	}
	printIntact(stdout, last.Trail, records, after)
	return nil
}

// askAudit publishes one audit request for the records after seq after and
// returns the locker's reply.
func (c *client) askAudit(ctx context.Context, o options, locker string, after uint64) (contract.AuditReply, error) {
	msgID := "ctl-" + randomHex(6)
	payload, err := json.Marshal(contract.AuditRequest{MsgID: msgID, After: after, Limit: contract.AuditLimitMax})
	if err != nil {
		return contract.AuditReply{}, err
	}
	topic := "lockers/" + locker + "/down/audit"
	pctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	if _, err := c.cli.Publish(pctx, &paho.Publish{Topic: topic, QoS: 1, Payload: payload}); err != nil {
		return contract.AuditReply{}, fmt.Errorf("cannot publish on %s: %w", topic, err)
	}
	wait := time.NewTimer(o.timeout)
	defer wait.Stop()
	for {
		select {
		case p := <-c.got:
			var id struct {
				MsgID string `json:"msg_id"`
			}
			if json.Unmarshal(p.Payload, &id) != nil || id.MsgID != msgID {
				continue // another request's, or another client's
			}
			if p.Topic == "lockers/"+locker+"/up/acks" {
				var ack contract.Ack
				if err := json.Unmarshal(p.Payload, &ack); err != nil || ack.OK {
					continue // the reply comes before its ack
				}
				return contract.AuditReply{}, fmt.Errorf("locker %s refused %s: %s (a gateway too old to answer locky/down/audit says its entity is unknown: stop it and use --data-dir)",
					locker, msgID, ack.Error)
			}
			var r contract.AuditReply
			if err := json.Unmarshal(p.Payload, &r); err != nil {
				return r, fmt.Errorf("locker %s answered %s with a reply that is not an audit page (%w): %s", locker, msgID, err, p.Payload)
			}
			return r, nil
		case <-wait.C:
			return contract.AuditReply{}, fmt.Errorf("no audit reply for %s from locker %s within %s: the locker may be offline (raise --timeout, or ask again once it is online)",
				msgID, locker, o.timeout)
		case <-ctx.Done():
			return contract.AuditReply{}, ctx.Err()
		}
	}
}

// printIntact says that a trail verified; records are those printed, the
// ones after seq after.
func printIntact(w io.Writer, t contract.AuditSummary, records []contract.AuditRecord, after uint64) {
	switch {
	case t.Records == 0:
		fmt.Fprintf(w, "audit trail intact: no record (the chain's head is record %d)\n", t.HeadSeq)
	case after > 0:
		fmt.Fprintf(w, "audit trail intact: %d records up to record %d; printed the %d after record %d\n", t.Records, t.HeadSeq, len(records), after)
	case len(records) > 0:
		fmt.Fprintf(w, "audit trail intact: %d records, %d to %d", t.Records, records[0].Seq, records[len(records)-1].Seq)
		if t.AnchorSeq > 0 {
			fmt.Fprintf(w, " (records up to %d were pruned)", t.AnchorSeq)
		}
		fmt.Fprintln(w)
	}
	if t.Unsealed > 0 {
		fmt.Fprintf(w, "%d of them, the oldest, predate the audit chain: they are unsealed and not verified\n", t.Unsealed)
	}
}

func printAudit(w io.Writer, records []contract.AuditRecord, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		for _, r := range records {
			if err := enc.Encode(r); err != nil {
				return err
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tAT\tDOOR\tKIND\tRESULT\tRESERVATION\tREQUEST\tSEAL\tREASON")
	for _, r := range records {
		seal := "sealed"
		if !r.Sealed {
			seal = "unsealed"
		}
		fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Seq, r.At.UTC().Format(time.RFC3339), r.Door, field(r.Kind),
			field(r.Result), field(r.Reservation), field(r.RequestID), seal, field(r.Reason))
	}
	return tw.Flush()
}

// field is s as one column: "-" when empty, quoted when it has white space or
// anything unprintable (a request id or a reason is free text: it must not
// pass for more columns or lines).
func field(s string) string {
	if s == "" {
		return "-"
	}
	for _, r := range s {
		if !unicode.IsPrint(r) || unicode.IsSpace(r) {
			return strconv.Quote(s)
		}
	}
	return s
}
