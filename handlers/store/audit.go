package store

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	bolt "go.etcd.io/bbolt"

	"github.com/locky-edge/locky/handlers/contract"
)

// The audit trail of door openings (SPEC §6) is tamper-evident. Each record is
// sealed: stored as its JSON with three more fields,
//
//	{"at":…,"door":…,…,"key":"<key id>","prev":"<seal of the record before>","mac":"<seal>"}
//
// where the seal is HMAC-SHA256(audit key, "record" ‖ seq ‖ the stored bytes
// without their ,"mac":"…" suffix), the audit key is HMAC-SHA256(code key,
// "locky audit trail v1") and prev chains the record to the one before it (64
// zeros for the first record of a chain). The meta bucket holds the chain's
// state, sealed the same way: its head (the last record written) and its
// anchor (the last record pruned). So a record edited, moved, removed from the
// middle, the start or the end, or inserted, is found by VerifyAudit, unless
// whoever did it also had the code key. A write that finds the trail already
// broken notes it in the chain's state for good, so that going on with the
// chain cannot hide the break; pruning stops at a break, keeping the evidence.
//
// "key" names the code key a record was sealed under: after a rotation the
// records sealed before it verify only with the previous key, which the store
// is given during the overlap (lockyctl audit --code-key-previous-file).
//
// Records written before the chain existed carry no seal. They are read as
// before and reported as unsealed; they can only be the oldest records, and
// they age out with the retention period. Older gateways (a rollback) read
// sealed records as plain ones; the records they write are unsealed and show
// as a break.

// AuditRecord is one entry of the audit trail of door openings (SPEC §6).
type AuditRecord struct {
	At          time.Time `json:"at"`
	Door        int       `json:"door"`
	Reservation string    `json:"reservation,omitempty"`
	Kind        string    `json:"kind"`
	Result      string    `json:"result"`
	Reason      string    `json:"reason,omitempty"`
	RequestID   string    `json:"request_id,omitempty"`
}

// AuditEntry is an audit record with its place in the trail.
type AuditEntry struct {
	Seq uint64 `json:"seq"`
	AuditRecord
	// Sealed is false for a record written before the audit chain existed.
	Sealed bool `json:"sealed"`
}

// AuditReport sums up what VerifyAudit checked.
type AuditReport struct {
	Records  int // records in the trail
	Unsealed int // of which the oldest, written before the chain: not verifiable
	// AnchorSeq is the last record pruned from the chain (0: none yet), and
	// HeadSeq the last record written to it (0: none yet).
	AnchorSeq, HeadSeq uint64
}

// AuditBreakError is the first place where the audit trail is not what the
// locker wrote. It wraps ErrAuditBroken.
type AuditBreakError struct {
	Seq     uint64 // the first bad or missing record; 0 when the chain's state is
	Problem string
}

func (e *AuditBreakError) Error() string {
	if e.Seq == 0 {
		return fmt.Sprintf("audit chain: %s: %v", e.Problem, ErrAuditBroken)
	}
	return fmt.Sprintf("audit record %d %s: %v", e.Seq, e.Problem, ErrAuditBroken)
}

func (e *AuditBreakError) Unwrap() error { return ErrAuditBroken }

var keyAuditChain = []byte("audit_chain")

// auditChain is the chain's state in the meta bucket, sealed by Tag.
type auditChain struct {
	StartSeq  uint64 `json:"start_seq,omitempty"` // the chain's first record
	AnchorSeq uint64 `json:"anchor_seq,omitempty"`
	AnchorMAC string `json:"anchor_mac,omitempty"`
	HeadSeq   uint64 `json:"head_seq,omitempty"`
	HeadMAC   string `json:"head_mac,omitempty"`
	// Broken is set, for good, when a write finds the trail already broken,
	// so that continuing the chain cannot make the break look sealed.
	Broken string `json:"broken,omitempty"`
	Key    string `json:"key"`
	Tag    string `json:"tag"`
}

// auditKey is the key that seals records, derived from one code key.
type auditKey struct {
	key []byte
	id  string // names the key in the records it seals, without revealing it
}

func newAuditKey(codeKey []byte) auditKey {
	k := mac(codeKey, []byte("locky audit trail v1"))
	return auditKey{key: k, id: hex.EncodeToString(mac(k, []byte("key id"))[:8])}
}

func mac(key []byte, parts ...[]byte) []byte {
	m := hmac.New(sha256.New, key)
	for _, p := range parts {
		m.Write(p)
	}
	return m.Sum(nil)
}

func (k auditKey) seal(seq uint64, body []byte) []byte {
	return mac(k.key, []byte("record"), u64(seq), body)
}

func (k auditKey) tag(c auditChain) string {
	c.Key, c.Tag = k.id, ""
	b, _ := json.Marshal(c) // a struct of strings and numbers always marshals
	return hex.EncodeToString(mac(k.key, []byte("chain"), b))
}

// auditKeys are the keys a chain may be sealed with: the current one first
// (the one that seals new records), then the one before a rotation.
type auditKeys []auditKey

func (s *Store) auditKeys() auditKeys {
	return newAuditKeys(s.cfg.CodeKey, s.cfg.PreviousCodeKey)
}

func newAuditKeys(codeKeys ...[]byte) auditKeys {
	var ks auditKeys
	for _, k := range codeKeys {
		if len(k) > 0 {
			ks = append(ks, newAuditKey(k))
		}
	}
	return ks
}

func (ks auditKeys) byID(id string) (auditKey, bool) {
	for _, k := range ks {
		if k.id == id {
			return k, true
		}
	}
	return auditKey{}, false
}

var genesis = strings.Repeat("0", 64) // prev of a chain's first record

// macSuffix is how a sealed record ends: ,"mac":"<64 hex digits>"}.
const (
	macPrefix    = `,"mac":"`
	macSuffixLen = len(macPrefix) + 64 + 2
)

// splitSeal returns the bytes a sealed record's seal covers and the seal;
// ok is false for an unsealed record.
func splitSeal(v []byte) (body, seal []byte, ok bool) {
	n := len(v)
	if n < macSuffixLen+1 || !bytes.Equal(v[n-macSuffixLen:n-macSuffixLen+len(macPrefix)], []byte(macPrefix)) ||
		!bytes.HasSuffix(v, []byte(`"}`)) {
		return nil, nil, false
	}
	seal, err := hex.DecodeString(string(v[n-66 : n-2]))
	if err != nil {
		return nil, nil, false
	}
	body = make([]byte, 0, n-macSuffixLen+1) // v may be read-only memory
	body = append(append(body, v[:n-macSuffixLen]...), '}')
	return body, seal, true
}

// sealedFields are the chain's fields of a sealed record.
type sealedFields struct {
	Key  string `json:"key"`
	Prev string `json:"prev"`
}

// loadChain returns the chain's state and, when it cannot be trusted, why.
func loadChain(tx *bolt.Tx, ks auditKeys) (auditChain, bool, string) {
	var c auditChain
	raw := tx.Bucket(bucketMeta).Get(keyAuditChain)
	if raw == nil {
		return c, false, ""
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		return auditChain{}, true, "its state is unreadable"
	}
	k, ok := ks.byID(c.Key)
	if !ok {
		return c, true, fmt.Sprintf("its state is sealed under a code key this check was not given (key id %q): give the previous code key too", c.Key)
	}
	if !hmac.Equal([]byte(k.tag(c)), []byte(c.Tag)) {
		return c, true, "its state (head and anchor) was altered"
	}
	return c, true, ""
}

// start returns what the chain's first record still in the trail must have:
// the seal before it, and its seq (0: unknown, before the chain exists).
func (c auditChain) start() (prev string, seq uint64) {
	if c.AnchorSeq > 0 {
		return c.AnchorMAC, c.AnchorSeq + 1
	}
	return genesis, c.StartSeq
}

func putChain(tx *bolt.Tx, k auditKey, c auditChain) error {
	c.Key, c.Tag = k.id, k.tag(c)
	return putJSON(tx.Bucket(bucketMeta), keyAuditChain, c)
}

// putAudit appends a sealed record to the audit trail and moves the chain's
// head to it.
func (s *Store) putAudit(tx *bolt.Tx, a AuditRecord) error {
	ks := s.auditKeys()
	b := tx.Bucket(bucketAudit)
	c, _, problem := loadChain(tx, ks)
	if problem == "" {
		problem = endProblem(b, c)
	}
	seq, err := b.NextSequence()
	if err != nil {
		return err
	}
	if problem != "" && c.Broken == "" {
		c.Broken = fmt.Sprintf("when record %d was written: %s", seq, problem)
		s.log.Error("the audit trail was tampered with; the chain goes on and keeps the evidence: run lockyctl audit",
			"problem", problem, "seq", seq)
	}
	prev := c.HeadMAC
	if prev == "" {
		prev = genesis
	}
	body, err := json.Marshal(struct {
		AuditRecord
		sealedFields
	}{a, sealedFields{Key: ks[0].id, Prev: prev}})
	if err != nil {
		return err
	}
	seal := hex.EncodeToString(ks[0].seal(seq, body))
	v := append(append(body[:len(body)-1:len(body)-1], macPrefix...), seal+`"}`...)
	if err := b.Put(u64(seq), v); err != nil {
		return err
	}
	if c.StartSeq == 0 {
		c.StartSeq = seq
	}
	c.HeadSeq, c.HeadMAC = seq, seal
	return putChain(tx, ks[0], c)
}

// endProblem says whether the trail still ends where the chain's head says,
// as a write must check before continuing the chain.
func endProblem(b *bolt.Bucket, c auditChain) string {
	k, v := b.Cursor().Last()
	if k == nil || !isSealed(v) {
		if c.HeadSeq != c.AnchorSeq {
			return fmt.Sprintf("records %d to %d are missing", c.AnchorSeq+1, c.HeadSeq)
		}
		return ""
	}
	_, seal, _ := splitSeal(v)
	if seq := binary.BigEndian.Uint64(k); seq != c.HeadSeq || hex.EncodeToString(seal) != c.HeadMAC {
		if c.HeadSeq == 0 {
			return "its state is missing"
		}
		return fmt.Sprintf("the trail ends at record %d, not at the chain's head %d", seq, c.HeadSeq)
	}
	return ""
}

func isSealed(v []byte) bool {
	n := len(v)
	return n > macSuffixLen && bytes.Equal(v[n-macSuffixLen:n-macSuffixLen+len(macPrefix)], []byte(macPrefix))
}

// Audit returns the audit trail, oldest first, at most max records from the end.
func (s *Store) Audit(max int) ([]AuditRecord, error) {
	var out []AuditRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketAudit).Cursor()
		for k, v := c.Last(); k != nil && len(out) < max; k, v = c.Prev() {
			var a AuditRecord
			if err := json.Unmarshal(v, &a); err != nil {
				return fmt.Errorf("corrupt audit record %d: %w", binary.BigEndian.Uint64(k), err)
			}
			out = append(out, a)
		}
		return nil
	})
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, err
}

// VerifyAudit walks the whole audit chain and returns, as an
// *AuditBreakError, the first record that is not what the locker wrote.
func (s *Store) VerifyAudit() (AuditReport, error) {
	_, r, err := s.AuditTrail()
	return r, err
}

// AuditTrail returns the whole audit trail, oldest first, and verifies it as
// VerifyAudit does; the entries are returned with a break too.
func (s *Store) AuditTrail() ([]AuditEntry, AuditReport, error) {
	var es []AuditEntry
	var r AuditReport
	var verr error
	err := s.db.View(func(tx *bolt.Tx) error {
		es, r, verr = verifyAudit(tx, s.auditKeys())
		return nil
	})
	if err != nil {
		return nil, r, err
	}
	return es, r, verr
}

// ReadAuditFile reads and verifies the audit trail of the database file at
// path, with the locker's code keys (the current one, and the previous one
// during a rotation), without writing to it: the check of a copy, or of the
// data dir of a stopped gateway.
func ReadAuditFile(path string, timeout time.Duration, codeKeys ...[]byte) ([]AuditEntry, AuditReport, error) {
	if len(codeKeys) == 0 || len(codeKeys[0]) < 16 {
		return nil, AuditReport{}, errors.New("store: the code key is shorter than 16 bytes; give the locker's code key")
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: timeout})
	switch {
	case errors.Is(err, bolt.ErrTimeout):
		return nil, AuditReport{}, fmt.Errorf("cannot open %q: a running gateway holds it; stop the gateway first, or check a copy taken while it was stopped: %w", path, err)
	case err != nil:
		return nil, AuditReport{}, fmt.Errorf("cannot open %q: %w", path, err)
	}
	defer db.Close()
	var es []AuditEntry
	var r AuditReport
	var verr error
	err = db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketAudit) == nil || tx.Bucket(bucketMeta) == nil {
			return fmt.Errorf("%q is not a locker's database (it has no audit trail)", path)
		}
		es, r, verr = verifyAudit(tx, newAuditKeys(codeKeys...))
		return nil
	})
	if err != nil {
		return nil, r, err
	}
	return es, r, verr
}

// verifyAudit reads every record and checks the chain: each record's seal,
// its link to the record before (or to the anchor), the sequence without
// gaps, and the head. The error is the first break found.
func verifyAudit(tx *bolt.Tx, ks auditKeys) ([]AuditEntry, AuditReport, error) {
	var es []AuditEntry
	r, err := walkAudit(tx, ks, func(e AuditEntry) { es = append(es, e) })
	var be *AuditBreakError
	if err != nil && !errors.As(err, &be) {
		return nil, r, err
	}
	return es, r, err
}

// walkAudit is verifyAudit giving each entry, oldest first, to fn instead
// of keeping them all.
func walkAudit(tx *bolt.Tx, ks auditKeys, fn func(AuditEntry)) (AuditReport, error) {
	c, found, problem := loadChain(tx, ks)
	w := &auditWalk{ks: ks, c: c, found: found}
	if problem != "" {
		w.fail(0, "%s", problem)
	}
	w.r.AnchorSeq, w.r.HeadSeq = c.AnchorSeq, c.HeadSeq
	w.prev, w.next = c.start()
	err := tx.Bucket(bucketAudit).ForEach(func(k, v []byte) error {
		w.record(binary.BigEndian.Uint64(k), v, fn)
		return nil
	})
	if err != nil {
		return w.r, err
	}
	w.checkEnd(problem)
	return w.r, w.first
}

// auditWalk is walkAudit's state as it goes through the trail, oldest first.
type auditWalk struct {
	ks    auditKeys
	c     auditChain
	found bool // the chain's state is in the database
	r     AuditReport
	first error  // the first break found
	prev  string // the seal the next sealed record must link to
	next  uint64 // the seq the next sealed record must have; 0: any
	last  uint64 // the last sealed record
}

// fail records a break at seq unless an earlier one was found.
func (w *auditWalk) fail(seq uint64, format string, args ...any) {
	if w.first == nil {
		w.first = &AuditBreakError{Seq: seq, Problem: fmt.Sprintf(format, args...)}
	}
}

// record checks the record seq, whose stored value is v, and gives it to fn.
func (w *auditWalk) record(seq uint64, v []byte, fn func(AuditEntry)) {
	e := AuditEntry{Seq: seq}
	if err := json.Unmarshal(v, &e.AuditRecord); err != nil {
		w.fail(seq, "cannot be read (%v): it was altered", err)
	}
	body, seal, sealed := splitSeal(v)
	e.Sealed = sealed
	fn(e)
	w.r.Records++
	if !sealed {
		if w.last > 0 || w.c.AnchorSeq > 0 || (w.found && seq >= w.c.StartSeq) {
			w.fail(seq, "is not sealed although the chain began before it: its seal was removed, or a gateway without the audit chain wrote it (a rollback)")
		}
		w.r.Unsealed++
		return
	}
	w.sealed(seq, body, seal)
}

// sealed checks a sealed record's seal and its link to the one before it,
// and makes it the last sealed record.
func (w *auditWalk) sealed(seq uint64, body, seal []byte) {
	var f sealedFields
	if err := json.Unmarshal(body, &f); err != nil {
		w.fail(seq, "cannot be read (%v): it was altered", err)
		return
	}
	switch k, ok := w.ks.byID(f.Key); {
	case !ok:
		w.fail(seq, "is sealed under a code key this check was not given (key id %q): give the previous code key too, or the record was altered", f.Key)
	case !hmac.Equal(k.seal(seq, body), seal):
		w.fail(seq, "was altered: its seal does not match its content (edited, or moved from another place in the trail)")
	case w.next != 0 && seq > w.next:
		w.fail(w.next, "is missing: the trail goes on at record %d (records were deleted)", seq)
	case w.next != 0 && seq < w.next:
		w.fail(seq, "is older than the chain's anchor %d: it was pruned, and put back", w.next-1)
	case f.Prev != w.prev:
		w.fail(seq, "does not follow the record before it in the chain (records before it were deleted or reordered)")
	}
	w.prev, w.next, w.last = hex.EncodeToString(seal), seq+1, seq
}

// checkEnd checks, after the last record, that the trail ends at the
// chain's head; problem is loadChain's, when the chain's state is unreadable.
func (w *auditWalk) checkEnd(problem string) {
	c := w.c
	switch {
	case !w.found && w.last > 0:
		w.fail(0, "its state (head and anchor) is missing from the database: it was deleted")
	case !w.found || problem != "":
	case w.last == 0 && c.HeadSeq != c.AnchorSeq:
		w.fail(c.AnchorSeq+1, "is missing, and so are the records after it up to %d (the trail was cut)", c.HeadSeq)
	case w.last > 0 && w.last < c.HeadSeq:
		w.fail(w.last+1, "is missing, and so are the records after it up to %d (the trail was cut at its end)", c.HeadSeq)
	case w.last > 0 && (w.last > c.HeadSeq || w.prev != c.HeadMAC):
		w.fail(w.last, "is not the chain's head (record %d): the trail was rewritten", c.HeadSeq)
	case c.Broken != "":
		w.fail(0, "a break was found %s", c.Broken)
	}
}

// pruneAudit deletes the audit records older than limit, oldest first. The
// sealed ones must verify as they go: pruning stops at a break, so that the
// evidence stays. The last sealed record pruned becomes the chain's anchor.
func (s *Store) pruneAudit(tx *bolt.Tx, limit time.Time) error {
	ks := s.auditKeys()
	c, found, problem := loadChain(tx, ks)
	prev, next := c.start()
	audit := tx.Bucket(bucketAudit)
	var doomed [][]byte
	var anchor uint64
	cur := audit.Cursor()
	for k, v := cur.First(); k != nil; k, v = cur.Next() {
		var a AuditRecord
		if err := json.Unmarshal(v, &a); err != nil || !a.At.Before(limit) {
			break
		}
		seq := binary.BigEndian.Uint64(k)
		body, seal, sealed := splitSeal(v)
		if !sealed {
			if anchor > 0 || c.AnchorSeq > 0 || (found && seq >= c.StartSeq) {
				break // unsealed inside the chain: a break, kept
			}
			doomed = append(doomed, bytes.Clone(k))
			continue
		}
		var f sealedFields
		key, ok := auditKey{}, false
		if json.Unmarshal(body, &f) == nil {
			key, ok = ks.byID(f.Key)
		}
		if problem != "" || !ok || !hmac.Equal(key.seal(seq, body), seal) || f.Prev != prev || (next != 0 && seq != next) {
			s.log.Error("the audit trail is broken; its records from there on are kept: run lockyctl audit", "seq", seq)
			break
		}
		prev, next, anchor = hex.EncodeToString(seal), seq+1, seq
		doomed = append(doomed, bytes.Clone(k))
	}
	for _, k := range doomed {
		if err := audit.Delete(k); err != nil {
			return err
		}
	}
	if anchor == 0 {
		return nil
	}
	c.AnchorSeq, c.AnchorMAC = anchor, prev
	return putChain(tx, ks[0], c)
}

// AuditReply commits the answer to the back-end's audit request
// (locky/down/audit): on locky/up/audit the records after req.After, oldest
// first, at most req.Limit and as many as fit in the contract's payload
// limit, with the verification of the whole trail; then the request's ack.
// Both go in one transaction, as a snapshot and its ack do.
//
// The trail is read and verified before, in a read transaction, so that door
// openings are not held up while it is walked; the reply describes the trail
// as it was then. Answering is not audited: the trail is of door openings, and
// a read that wrote to it would move its head under the reader's feet.
func (s *Store) AuditReply(now time.Time, req contract.AuditRequest) ([]Message, error) {
	var reply contract.AuditReply
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		reply, err = auditPage(tx, s.auditKeys(), req)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("cannot read the audit trail for %s: %w", req.MsgID, err)
	}
	if !reply.Verified {
		s.log.Error("an audit request found the trail tampered with; the back-end is told: run lockyctl audit",
			"msg_id", req.MsgID, "break", reply.Break)
	}
	return s.write(now, func(_ *bolt.Tx, o *Outbox) error {
		if _, err := o.Append(contract.TopicAudit, func(uint64) any { return reply }); err != nil {
			return err
		}
		return o.Ack(req.MsgID, nil)
	})
}

// maxAuditField bounds each text field of a record in a reply. The locker
// writes none longer (a reason is at most 512 bytes, ids 128), so only a
// record altered in the database is cut; its seal no longer matches, and the
// reply's break names it. Without the bound, one huge record could not fit in
// any reply and a reader would ask for it forever.
const maxAuditField = 1024

// auditPage reads the page of records that answers req and verifies the
// whole chain.
func auditPage(tx *bolt.Tx, ks auditKeys, req contract.AuditRequest) (contract.AuditReply, error) {
	limit := req.Limit
	if limit <= 0 || limit > contract.AuditLimitMax {
		limit = contract.AuditLimitDefault
	}
	reply := contract.AuditReply{MsgID: req.MsgID, Records: []contract.AuditRecord{}, Next: req.After}
	var sizes []int // each record's encoded size
	total := 0      // theirs, with the commas between them
	r, err := walkAudit(tx, ks, func(e AuditEntry) {
		if e.Seq <= req.After {
			return
		}
		if reply.More || len(reply.Records) == limit {
			reply.More = true
			return
		}
		rec := contract.AuditRecord{Seq: e.Seq, At: e.At, Door: e.Door, Reservation: cutField(e.Reservation),
			Kind: cutField(e.Kind), Result: cutField(e.Result), Reason: cutField(e.Reason),
			RequestID: cutField(e.RequestID), Sealed: e.Sealed}
		b, err := json.Marshal(rec)
		if err != nil || total+len(b)+1 > contract.MaxPayload {
			reply.More = true // no room left, whatever the rest of the reply
			return
		}
		reply.Records, sizes, total = append(reply.Records, rec), append(sizes, len(b)), total+len(b)+1
	})
	var be *AuditBreakError
	switch {
	case errors.As(err, &be):
		reply.Break, reply.BreakSeq = be.Error(), be.Seq
	case err != nil:
		return reply, err
	default:
		reply.Verified = true
	}
	reply.Trail = contract.AuditSummary{Records: r.Records, Unsealed: r.Unsealed, AnchorSeq: r.AnchorSeq, HeadSeq: r.HeadSeq}

	// The reply without its records, with the longest Next and More, bounds
	// what the rest takes; drop records from the end until all fits.
	rest := reply
	rest.Records, rest.Next, rest.More = []contract.AuditRecord{}, ^uint64(0), false
	b, err := json.Marshal(rest)
	if err != nil {
		return reply, err
	}
	for n := len(reply.Records); n > 0 && len(b)+total-1 > contract.MaxPayload; n-- {
		total -= sizes[n-1] + 1
		reply.Records, reply.More = reply.Records[:n-1], true
	}
	if n := len(reply.Records); n > 0 {
		reply.Next = reply.Records[n-1].Seq
	}
	return reply, nil
}

// cutField returns s, or its first maxAuditField bytes (whole UTF-8
// characters) marked as cut.
func cutField(s string) string {
	if len(s) <= maxAuditField {
		return s
	}
	n := maxAuditField
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return fmt.Sprintf("%s… (cut: %d bytes in all)", s[:n], len(s))
}
