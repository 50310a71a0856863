package store_test

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/locky-edge/locky/handlers/contract"
	"github.com/locky-edge/locky/handlers/store"
)

// auditN commits n audited events, one an hour from start, on doors from
// first on: n audit records.
func auditN(t *testing.T, s *store.Store, start time.Time, first, n int) {
	t.Helper()
	for i := range n {
		at := start.Add(time.Duration(i) * time.Hour)
		a := store.AuditRecord{At: at, Door: first + i, Kind: store.KindSupport, Result: "commanded", Reason: "ticket"}
		if _, _, err := s.AppendEvent(at, contract.Event{Type: contract.EventRemoteOpen, Door: first + i}, &a); err != nil {
			t.Fatalf("AppendEvent: %v", err)
		}
	}
}

// seqKey is the key of audit record seq in the database file.
func seqKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

// tamper closes s, changes its database file directly, as whoever holds the
// SD card could, and opens it again.
func tamper(t *testing.T, s *store.Store, cfg store.Config, fn func(audit, meta *bolt.Bucket) error) *store.Store {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	db, err := bolt.Open(cfg.Path, 0o600, nil)
	if err != nil {
		t.Fatalf("cannot open the file to tamper with it: %v", err)
	}
	err = db.Update(func(tx *bolt.Tx) error { return fn(tx.Bucket([]byte("audit")), tx.Bucket([]byte("meta"))) })
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatalf("tamper: %v", err)
	}
	return openStore(t, cfg, true)
}

// plain is an audit record as the store wrote it before the chain existed.
func plain(t *testing.T, a store.AuditRecord) []byte {
	t.Helper()
	b, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// mustBreak fails unless VerifyAudit reports the first break at seq (0: the
// chain's state) with an error containing want.
func mustBreak(t *testing.T, s *store.Store, seq uint64, want string) {
	t.Helper()
	_, err := s.VerifyAudit()
	var be *store.AuditBreakError
	if !errors.As(err, &be) || !errors.Is(err, store.ErrAuditBroken) {
		t.Fatalf("VerifyAudit: got %v; want an *AuditBreakError at record %d wrapping ErrAuditBroken", err, seq)
	}
	if be.Seq != seq || !strings.Contains(err.Error(), want) {
		t.Fatalf("VerifyAudit: got break at record %d, %q; want record %d and %q", be.Seq, err, seq, want)
	}
}

// mustVerify fails unless VerifyAudit finds the trail intact, and returns its report.
func mustVerify(t *testing.T, s *store.Store) store.AuditReport {
	t.Helper()
	r, err := s.VerifyAudit()
	if err != nil {
		t.Fatalf("VerifyAudit: got %v; want the trail intact", err)
	}
	return r
}

func TestAuditTrailVerifies(t *testing.T) {
	cfg := testConfig(t)
	s := openStore(t, cfg, true)
	if r := mustVerify(t, s); r != (store.AuditReport{}) {
		t.Fatalf("empty trail: got %+v; want a zero report", r)
	}
	seed(t, s)
	if _, err := s.DoorOpened(t0(), store.Cycle{Door: 1, Kind: contract.KindDeposit, RequestID: "r-1", OpenedAt: t0()}, nil); err != nil {
		t.Fatalf("DoorOpened: %v", err)
	}
	if ok, err := s.RemoteOpen(t0(), "c-1", 2, "ticket 881"); !ok || err != nil {
		t.Fatalf("RemoteOpen: got %v, %v", ok, err)
	}
	auditN(t, s, t0(), 3, 3)
	if r := mustVerify(t, s); r != (store.AuditReport{Records: 5, HeadSeq: 5}) {
		t.Fatalf("got %+v; want 5 records, head 5", r)
	}

	// Reopened, the trail reads and verifies the same; new records go on.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, cfg, true)
	auditN(t, s, t0().Add(time.Hour), 6, 1)
	es, r, err := s.AuditTrail()
	if err != nil || r != (store.AuditReport{Records: 6, HeadSeq: 6}) || len(es) != 6 {
		t.Fatalf("AuditTrail: got %d entries, %+v, %v; want 6 intact", len(es), r, err)
	}
	want := store.AuditEntry{Seq: 2, Sealed: true, AuditRecord: store.AuditRecord{At: t0(), Door: 2, Kind: store.KindSupport,
		Result: "commanded", Reason: "ticket 881", RequestID: "c-1"}}
	if es[1] != want {
		t.Fatalf("entry 2: got %+v; want %+v", es[1], want)
	}
	for i, e := range es {
		if e.Seq != uint64(i+1) || !e.Sealed {
			t.Fatalf("entry %d: got %+v; want seq %d, sealed", i, e, i+1)
		}
	}
	if a, err := s.Audit(1); err != nil || len(a) != 1 || a[0].Door != 6 {
		t.Fatalf("Audit(1): got %+v, %v; want the last record (door 6)", a, err)
	}
}

func TestAuditTamperingIsFound(t *testing.T) {
	f := func(name string, seq uint64, want string, fn func(audit, meta *bolt.Bucket) error) {
		t.Helper()
		t.Run(name, func(t *testing.T) {
			cfg := testConfig(t)
			s := openStore(t, cfg, true)
			auditN(t, s, t0(), 1, 5)
			mustVerify(t, s)
			s = tamper(t, s, cfg, fn)
			mustBreak(t, s, seq, want)
		})
	}
	replace := func(seq uint64, old, new string) func(audit, _ *bolt.Bucket) error {
		return func(audit, _ *bolt.Bucket) error {
			v := audit.Get(seqKey(seq))
			if !bytes.Contains(v, []byte(old)) {
				return errors.New("nothing to replace")
			}
			return audit.Put(seqKey(seq), bytes.Replace(v, []byte(old), []byte(new), 1))
		}
	}
	deleteSeq := func(seqs ...uint64) func(audit, _ *bolt.Bucket) error {
		return func(audit, _ *bolt.Bucket) error {
			for _, seq := range seqs {
				if err := audit.Delete(seqKey(seq)); err != nil {
					return err
				}
			}
			return nil
		}
	}
	f("a field edited", 3, "audit record 3 was altered", replace(3, `"door":3`, `"door":9`))
	f("the time edited", 1, "audit record 1 was altered", replace(1, `"at":"2026-03-01T12`, `"at":"2026-03-01T11`))
	f("a field added", 4, "audit record 4 was altered", replace(4, `{`, `{"note":"x",`))
	f("deleted from the middle", 3, "audit record 3 is missing: the trail goes on at record 4", deleteSeq(3))
	f("two deleted from the middle", 2, "audit record 2 is missing: the trail goes on at record 4", deleteSeq(2, 3))
	f("the first deleted", 1, "audit record 1 is missing: the trail goes on at record 2", deleteSeq(1))
	f("the last deleted", 5, "audit record 5 is missing, and so are the records after it up to 5", deleteSeq(5))
	f("all deleted", 1, "audit record 1 is missing, and so are the records after it up to 5", deleteSeq(1, 2, 3, 4, 5))
	f("reordered", 2, "audit record 2 was altered: its seal does not match its content (edited, or moved", func(audit, _ *bolt.Bucket) error {
		v2, v3 := bytes.Clone(audit.Get(seqKey(2))), bytes.Clone(audit.Get(seqKey(3)))
		return errors.Join(audit.Put(seqKey(2), v3), audit.Put(seqKey(3), v2))
	})
	f("a record copied in", 6, "audit record 6 was altered", func(audit, _ *bolt.Bucket) error {
		return audit.Put(seqKey(6), bytes.Clone(audit.Get(seqKey(5))))
	})
	f("its seal removed", 3, "audit record 3 is not sealed although the chain began before it", func(audit, _ *bolt.Bucket) error {
		return audit.Put(seqKey(3), plain(t, store.AuditRecord{At: t0().Add(2 * time.Hour), Door: 3, Kind: store.KindSupport, Result: "commanded"}))
	})
	f("the chain's state deleted", 0, "audit chain: its state (head and anchor) is missing", func(_, meta *bolt.Bucket) error {
		return meta.Delete([]byte("audit_chain"))
	})
	// Cutting the end means moving the head back to the record before, which
	// needs a new tag: without the code key it cannot be made.
	f("the end cut, the head moved back", 0, "audit chain: its state (head and anchor) was altered", func(audit, meta *bolt.Bucket) error {
		var c map[string]any
		if err := json.Unmarshal(meta.Get([]byte("audit_chain")), &c); err != nil {
			return err
		}
		v4 := audit.Get(seqKey(4))
		c["head_seq"], c["head_mac"] = 4, string(v4[len(v4)-66:len(v4)-2])
		b, _ := json.Marshal(c)
		return errors.Join(meta.Put([]byte("audit_chain"), b), audit.Delete(seqKey(5)))
	})
}

func TestAuditWriteAfterTamperingKeepsTheEvidence(t *testing.T) {
	f := func(name string, seq uint64, want string, resetSequence bool) {
		t.Helper()
		t.Run(name, func(t *testing.T) {
			cfg := testConfig(t)
			s := openStore(t, cfg, true)
			auditN(t, s, t0(), 1, 5)
			s = tamper(t, s, cfg, func(audit, meta *bolt.Bucket) error {
				var c map[string]any
				if err := json.Unmarshal(meta.Get([]byte("audit_chain")), &c); err != nil {
					return err
				}
				v4 := audit.Get(seqKey(4))
				c["head_seq"], c["head_mac"] = 4, string(v4[len(v4)-66:len(v4)-2])
				b, _ := json.Marshal(c)
				if resetSequence {
					if err := audit.SetSequence(4); err != nil {
						return err
					}
				}
				return errors.Join(meta.Put([]byte("audit_chain"), b), audit.Delete(seqKey(5)))
			})
			// The locker goes on: its next record must not make the cut look sealed.
			auditN(t, s, t0().Add(5*time.Hour), 6, 2)
			mustBreak(t, s, seq, want)
		})
	}
	f("the sequence left alone", 5, "audit record 5 is missing: the trail goes on at record 6", false)
	f("the sequence moved back too", 0, "audit chain: a break was found when record 5 was written: its state (head and anchor) was altered", true)
}

func TestAuditPruningKeepsTheChainVerifiable(t *testing.T) {
	day := 24 * time.Hour
	cfg := testConfig(t)
	cfg.Retention = day
	s := openStore(t, cfg, true)
	auditN(t, s, t0(), 1, 10) // records 1..10 at t0, t0+1h, … t0+9h
	if _, err := s.Prune(t0().Add(day + 4*time.Hour + 30*time.Minute)); err != nil {
		t.Fatalf("Prune: %v", err)
	}
	if r := mustVerify(t, s); r != (store.AuditReport{Records: 5, AnchorSeq: 5, HeadSeq: 10}) {
		t.Fatalf("after Prune: got %+v; want records 6..10, anchored at 5", r)
	}
	auditN(t, s, t0().Add(10*time.Hour), 11, 2)
	if r := mustVerify(t, s); r != (store.AuditReport{Records: 7, AnchorSeq: 5, HeadSeq: 12}) {
		t.Fatalf("after two more: got %+v; want records 6..12", r)
	}
	// Everything pruned: the chain is its anchor alone, and goes on from it.
	if _, err := s.Prune(t0().Add(30 * day)); err != nil {
		t.Fatalf("Prune: %v", err)
	}
	if r := mustVerify(t, s); r != (store.AuditReport{AnchorSeq: 12, HeadSeq: 12}) {
		t.Fatalf("after pruning all: got %+v; want no record, anchored at 12", r)
	}
	auditN(t, s, t0().Add(30*day), 13, 2)
	if r := mustVerify(t, s); r != (store.AuditReport{Records: 2, AnchorSeq: 12, HeadSeq: 14}) {
		t.Fatalf("after pruning all and two more: got %+v; want records 13, 14", r)
	}

	// The anchor is what the oldest remaining record must follow.
	s = tamper(t, s, cfg, func(audit, _ *bolt.Bucket) error { return audit.Delete(seqKey(13)) })
	mustBreak(t, s, 13, "audit record 13 is missing: the trail goes on at record 14")
}

func TestAuditPruningStopsAtABreak(t *testing.T) {
	cfg := testConfig(t)
	cfg.Retention = 24 * time.Hour
	s := openStore(t, cfg, true)
	auditN(t, s, t0(), 1, 10)
	s = tamper(t, s, cfg, func(audit, _ *bolt.Bucket) error {
		v := audit.Get(seqKey(3))
		return audit.Put(seqKey(3), bytes.Replace(v, []byte(`"door":3`), []byte(`"door":8`), 1))
	})
	// Old enough to prune records 1..8; the edited record 3 and all after it stay.
	if _, err := s.Prune(t0().Add(24*time.Hour + 7*time.Hour + 30*time.Minute)); err != nil {
		t.Fatalf("Prune: %v", err)
	}
	mustBreak(t, s, 3, "audit record 3 was altered")
	es, r, _ := s.AuditTrail()
	if len(es) != 8 || es[0].Seq != 3 || r.AnchorSeq != 2 {
		t.Fatalf("after Prune: got %d records from %+v, %+v; want records 3..10 kept, anchored at 2", len(es), es[0], r)
	}
}

func TestAuditRecordsWithoutSealAreRead(t *testing.T) {
	cfg := testConfig(t)
	cfg.Retention = 24 * time.Hour
	s := openStore(t, cfg, true)
	// Three records as a gateway before the chain wrote them.
	s = tamper(t, s, cfg, func(audit, _ *bolt.Bucket) error {
		for i := range 3 {
			a := store.AuditRecord{At: t0().Add(time.Duration(i) * time.Hour), Door: i + 1, Kind: contract.KindPickup,
				Reservation: "R1", Result: contract.ResultOpened, RequestID: "r"}
			seq, err := audit.NextSequence()
			if err != nil {
				return err
			}
			if err := audit.Put(seqKey(seq), plain(t, a)); err != nil {
				return err
			}
		}
		return nil
	})
	if a, err := s.Audit(10); err != nil || len(a) != 3 || a[2].Door != 3 || a[2].Reservation != "R1" {
		t.Fatalf("Audit: got %+v, %v; want the 3 old records", a, err)
	}
	if r := mustVerify(t, s); r != (store.AuditReport{Records: 3, Unsealed: 3}) {
		t.Fatalf("got %+v; want 3 unsealed records", r)
	}
	// The chain begins with the next record.
	auditN(t, s, t0().Add(3*time.Hour), 4, 3)
	if r := mustVerify(t, s); r != (store.AuditReport{Records: 6, Unsealed: 3, HeadSeq: 6}) {
		t.Fatalf("got %+v; want 3 unsealed then 3 sealed records", r)
	}
	es, _, err := s.AuditTrail()
	if err != nil || len(es) != 6 || es[2].Sealed || !es[3].Sealed || es[3].Seq != 4 {
		t.Fatalf("AuditTrail: got %+v, %v; want records 1..3 unsealed, 4..6 sealed", es, err)
	}
	// The old records age out first; the chain stays verifiable.
	if _, err := s.Prune(t0().Add(24*time.Hour + 3*time.Hour + 30*time.Minute)); err != nil {
		t.Fatalf("Prune: %v", err)
	}
	if r := mustVerify(t, s); r != (store.AuditReport{Records: 2, AnchorSeq: 4, HeadSeq: 6}) {
		t.Fatalf("after Prune: got %+v; want records 5, 6 anchored at 4", r)
	}
	// An unsealed record is an old one only before the chain's first.
	s = tamper(t, s, cfg, func(audit, _ *bolt.Bucket) error {
		return audit.Put(seqKey(7), plain(t, store.AuditRecord{At: t0().Add(6 * time.Hour), Door: 7, Kind: store.KindSupport, Result: "commanded"}))
	})
	mustBreak(t, s, 7, "audit record 7 is not sealed although the chain began before it")
}

// Whoever removes every seal and the chain's state makes the trail look as if
// it predates the chain: it is reported unsealed, never as verified.
func TestAuditTrailStrippedOfItsSealsIsReportedUnsealed(t *testing.T) {
	cfg := testConfig(t)
	s := openStore(t, cfg, true)
	auditN(t, s, t0(), 1, 3)
	s = tamper(t, s, cfg, func(audit, meta *bolt.Bucket) error {
		for seq := uint64(1); seq <= 3; seq++ {
			v := audit.Get(seqKey(seq))
			var a store.AuditRecord
			if err := json.Unmarshal(v, &a); err != nil {
				return err
			}
			if err := audit.Put(seqKey(seq), plain(t, a)); err != nil {
				return err
			}
		}
		return meta.Delete([]byte("audit_chain"))
	})
	if r := mustVerify(t, s); r.Unsealed != 3 || r.Records != 3 {
		t.Fatalf("got %+v; want all 3 records reported unsealed", r)
	}
}

func TestAuditChainAcrossAKeyRotation(t *testing.T) {
	const oldKey, newKey = "audit-test-code-key-old", "audit-test-code-key-new"
	cfg := testConfig(t)
	cfg.CodeKey = []byte(oldKey)
	s := openStore(t, cfg, true)
	auditN(t, s, t0(), 1, 3)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	cfg.CodeKey, cfg.PreviousCodeKey = []byte(newKey), []byte(oldKey)
	s = openStore(t, cfg, true)
	mustVerify(t, s)
	auditN(t, s, t0().Add(3*time.Hour), 4, 2) // sealed under the new key
	if r := mustVerify(t, s); r != (store.AuditReport{Records: 5, HeadSeq: 5}) {
		t.Fatalf("got %+v; want 5 records", r)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Without the previous key the records it sealed cannot be verified.
	cfg.PreviousCodeKey = nil
	s = openStore(t, cfg, true)
	mustBreak(t, s, 1, "audit record 1 is sealed under a code key this check was not given")
}

func TestReadAuditFile(t *testing.T) {
	cfg := testConfig(t)
	s := openStore(t, cfg, true)
	auditN(t, s, t0(), 1, 3)
	if _, _, err := store.ReadAuditFile(cfg.Path, 50*time.Millisecond, cfg.CodeKey); err == nil || !strings.Contains(err.Error(), "a running gateway holds it") {
		t.Fatalf("ReadAuditFile of an open store: got %v; want an error saying the gateway holds it", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	es, r, err := store.ReadAuditFile(cfg.Path, time.Second, cfg.CodeKey)
	if err != nil || len(es) != 3 || r != (store.AuditReport{Records: 3, HeadSeq: 3}) || es[2].Door != 3 {
		t.Fatalf("ReadAuditFile: got %+v, %+v, %v; want the 3 records intact", es, r, err)
	}
	_, _, err = store.ReadAuditFile(cfg.Path, time.Second, []byte("not-the-locker-code-key"))
	var be *store.AuditBreakError
	if !errors.As(err, &be) || be.Seq != 0 || !strings.Contains(err.Error(), "its state is sealed under a code key this check was not given") {
		t.Fatalf("ReadAuditFile with another key: got %v; want a break naming the key", err)
	}
}

// replyOf returns the audit reply that a call committed, and fails unless
// the call committed exactly the reply and then the request's ok ack.
func replyOf(t *testing.T, msgs []store.Message, err error, msgID string) contract.AuditReply {
	t.Helper()
	mustOK(t, msgs, err, msgID)
	if len(msgs) != 2 || msgs[0].Topic != contract.TopicAudit || msgs[1].Topic != contract.TopicAcks {
		t.Fatalf("%s: got %s; want the audit reply, then the ack", msgID, dump(msgs))
	}
	if len(msgs[0].Payload) > contract.MaxPayload {
		t.Fatalf("%s: the reply is %d bytes; want at most %d", msgID, len(msgs[0].Payload), contract.MaxPayload)
	}
	var r contract.AuditReply
	if err := json.Unmarshal(msgs[0].Payload, &r); err != nil {
		t.Fatalf("%s: reply %s: %v", msgID, msgs[0].Payload, err)
	}
	if r.MsgID != msgID {
		t.Fatalf("got a reply to %q; want %q", r.MsgID, msgID)
	}
	return r
}

// recordSeqs returns the seqs of a reply's records.
func recordSeqs(r contract.AuditReply) []uint64 {
	out := []uint64{}
	for _, rec := range r.Records {
		out = append(out, rec.Seq)
	}
	return out
}

func TestAuditReplyPagesThroughTheTrail(t *testing.T) {
	s := openTestStore(t)
	auditN(t, s, t0(), 1, 5)
	f := func(after uint64, limit int, wantSeqs []uint64, wantNext uint64, wantMore bool) {
		t.Helper()
		id := fmt.Sprintf("a-%d-%d", after, limit)
		msgs, err := s.AuditReply(t0(), contract.AuditRequest{MsgID: id, After: after, Limit: limit})
		r := replyOf(t, msgs, err, id)
		if got := recordSeqs(r); !reflect.DeepEqual(got, wantSeqs) || r.Next != wantNext || r.More != wantMore {
			t.Errorf("after %d, limit %d: got records %v, next %d, more %v; want %v, %d, %v",
				after, limit, got, r.Next, r.More, wantSeqs, wantNext, wantMore)
		}
		if want := (contract.AuditSummary{Records: 5, HeadSeq: 5}); !r.Verified || r.Break != "" || r.Trail != want {
			t.Errorf("after %d: got verified %v, break %q, trail %+v; want verified, %+v", after, r.Verified, r.Break, r.Trail, want)
		}
	}
	f(0, 2, []uint64{1, 2}, 2, true)
	f(2, 2, []uint64{3, 4}, 4, true)
	f(4, 2, []uint64{5}, 5, false)
	f(5, 2, []uint64{}, 5, false)
	f(0, 0, []uint64{1, 2, 3, 4, 5}, 5, false) // no limit: the default
	f(9, 2, []uint64{}, 9, false)

	// A record as the back-end gets it.
	msgs, err := s.AuditReply(t0(), contract.AuditRequest{MsgID: "one", After: 2, Limit: 1})
	want := contract.AuditRecord{Seq: 3, At: t0().Add(2 * time.Hour), Door: 3, Kind: store.KindSupport,
		Result: "commanded", Reason: "ticket", Sealed: true}
	if r := replyOf(t, msgs, err, "one"); len(r.Records) != 1 || r.Records[0] != want {
		t.Fatalf("got %+v; want %+v", r.Records, want)
	}
	// Answering is a read: the trail is as it was.
	if r := mustVerify(t, s); r != (store.AuditReport{Records: 5, HeadSeq: 5}) {
		t.Fatalf("after the replies: got %+v; want the 5 records alone", r)
	}
}

func TestAuditReplyReportsABreak(t *testing.T) {
	cfg := testConfig(t)
	s := openStore(t, cfg, true)
	auditN(t, s, t0(), 1, 5)
	s = tamper(t, s, cfg, func(audit, _ *bolt.Bucket) error {
		v := audit.Get(seqKey(3))
		return audit.Put(seqKey(3), bytes.Replace(v, []byte(`"door":3`), []byte(`"door":9`), 1))
	})
	// Whatever the page, the verification is the whole trail's.
	f := func(after uint64) {
		t.Helper()
		id := fmt.Sprintf("a-%d", after)
		msgs, err := s.AuditReply(t0(), contract.AuditRequest{MsgID: id, After: after, Limit: 10})
		r := replyOf(t, msgs, err, id)
		if r.Verified || r.BreakSeq != 3 || !strings.Contains(r.Break, "audit record 3 was altered") {
			t.Errorf("after %d: got verified %v, break %d %q; want a break at record 3", after, r.Verified, r.BreakSeq, r.Break)
		}
	}
	f(0)
	f(3)
	f(5)
	msgs, err := s.AuditReply(t0(), contract.AuditRequest{MsgID: "all", Limit: 10})
	if r := replyOf(t, msgs, err, "all"); len(r.Records) != 5 || r.Records[2].Door != 9 {
		t.Fatalf("got %+v; want the 5 records, the edited one as it now reads", r.Records)
	}
}

func TestAuditReplyFitsThePayloadLimit(t *testing.T) {
	cfg := testConfig(t)
	s := openStore(t, cfg, true)
	// 300 support openings with the longest reason a command may give.
	reason := strings.Repeat("\u2028", 512/3) // escaped by JSON: 6 bytes each
	for i := range 300 {
		at := t0().Add(time.Duration(i) * time.Minute)
		a := store.AuditRecord{At: at, Door: 1, Kind: store.KindSupport, Result: "commanded", Reason: reason, RequestID: strings.Repeat("r", 128)}
		if _, _, err := s.AppendEvent(at, contract.Event{Type: contract.EventRemoteOpen, Door: 1}, &a); err != nil {
			t.Fatal(err)
		}
	}
	// Then one a tamperer blew up: it must not keep every reply from
	// going on past it.
	s = tamper(t, s, cfg, func(audit, _ *bolt.Bucket) error {
		v := audit.Get(seqKey(150))
		return audit.Put(seqKey(150), bytes.Replace(v, []byte(`"reason":"`), []byte(`"reason":"`+strings.Repeat("x", 200<<10)), 1))
	})
	var seqs []uint64
	after, pages := uint64(0), 0
	for more := true; more; pages++ {
		if pages == 300 {
			t.Fatalf("still paging after %d pages, at record %d", pages, after)
		}
		id := fmt.Sprintf("p-%d", pages)
		msgs, err := s.AuditReply(t0(), contract.AuditRequest{MsgID: id, After: after, Limit: contract.AuditLimitMax})
		r := replyOf(t, msgs, err, id) // checks the size
		if r.Verified || r.BreakSeq != 150 {
			t.Fatalf("page %d: got verified %v, break %d; want the break at record 150", pages, r.Verified, r.BreakSeq)
		}
		if len(r.Records) == 0 || (r.More && len(r.Records) == contract.AuditLimitMax) {
			t.Fatalf("page %d: got %d records, more %v; want a page cut by size", pages, len(r.Records), r.More)
		}
		for _, rec := range r.Records {
			seqs = append(seqs, rec.Seq)
			if rec.Seq == 150 && (len(rec.Reason) > 2<<10 || !strings.Contains(rec.Reason, "(cut: ")) {
				t.Fatalf("record 150: got a reason of %d bytes; want it cut and marked", len(rec.Reason))
			}
		}
		after, more = r.Next, r.More
	}
	if len(seqs) != 300 || seqs[0] != 1 || seqs[299] != 300 {
		t.Fatalf("got %d records over %d pages, %v…; want records 1..300 once each", len(seqs), pages, seqs[:min(3, len(seqs))])
	}
	for i, seq := range seqs {
		if seq != uint64(i+1) {
			t.Fatalf("record %d came as %d; want each once, in order", i+1, seq)
		}
	}
}
