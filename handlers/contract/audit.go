package contract

import "time"

// The audit trail through the back-end (SPEC §6): the back-end asks on
// locky/down/audit for the door openings after the last one it has,
//
//	{"msg_id":"m-9","after":0,"limit":200}
//
// and the locker answers on locky/up/audit with a page of them and the
// verification of the whole trail's chain, then acks the request on
// locky/up/acks, as it answers a sync with a snapshot. A request that is not
// understood gets only the ack, with the error.

// Bounds of an audit page: a request without a limit gets AuditLimitDefault
// records, and none gets more than AuditLimitMax. A reply holds fewer when
// its records would not fit in MaxPayload; More then says there are others.
const (
	AuditLimitDefault = 200
	AuditLimitMax     = 500
)

// AuditRequest on locky/down/audit asks for the audit records whose seq is
// above After (0: from the oldest), at most Limit of them.
type AuditRequest struct {
	MsgID string `json:"msg_id"`
	After uint64 `json:"after"`
	Limit int    `json:"limit,omitempty"`
}

// AuditRecord is one door opening in the audit trail: who (the code kind and
// reservation, or support with the reason), when, on which door and with
// what result. Seq is its place in the trail; Sealed is false for the oldest
// records, written before the trail was chained, which cannot be verified.
type AuditRecord struct {
	Seq         uint64    `json:"seq"`
	At          time.Time `json:"at"`
	Door        int       `json:"door"`
	Reservation string    `json:"reservation,omitempty"`
	Kind        string    `json:"kind"`
	Result      string    `json:"result"`
	Reason      string    `json:"reason,omitempty"`
	RequestID   string    `json:"request_id,omitempty"`
	Sealed      bool      `json:"sealed"`
}

// AuditReply answers an audit request on locky/up/audit.
type AuditReply struct {
	MsgID   string        `json:"msg_id"`
	Records []AuditRecord `json:"records"` // oldest first; [] when none
	// Next is what to send as after for the records that follow: the seq of
	// the last record here, or the request's after when there is none.
	Next uint64 `json:"next"`
	More bool   `json:"more"` // records after Next were in the trail
	// Verified reports whether the whole trail's chain, not only this page,
	// is what the locker wrote. When not, Break says where it is broken and
	// why, and BreakSeq is the first bad record (0: the chain's own state).
	Verified bool         `json:"verified"`
	Break    string       `json:"break,omitempty"`
	BreakSeq uint64       `json:"break_seq,omitempty"`
	Trail    AuditSummary `json:"trail"`
}

// AuditSummary describes the whole trail as the reply verified it.
type AuditSummary struct {
	Records  int `json:"records"`  // records in the trail
	Unsealed int `json:"unsealed"` // of which the oldest predate the chain
	// AnchorSeq is the last record pruned (older than the retention period;
	// 0: none yet), HeadSeq the last one written.
	AnchorSeq uint64 `json:"anchor_seq"`
	HeadSeq   uint64 `json:"head_seq"`
}

// DecodeAudit decodes and validates a message of locky/down/audit; a
// request without a limit gets AuditLimitDefault.
func DecodeAudit(payload []byte) (AuditRequest, error) {
	var a AuditRequest
	if err := checkRaw(payload); err != nil {
		return a, err
	}
	if err := strictUnmarshal(payload, &a, keysAudit, "the audit request"); err != nil {
		return a, err
	}
	if err := checkMsgID(a.MsgID); err != nil {
		return a, err
	}
	if a.Limit < 0 || a.Limit > AuditLimitMax {
		return a, bad("limit must be 1..%d, or absent for %d, not %d: ask for the next page with after", AuditLimitMax, AuditLimitDefault, a.Limit)
	}
	if a.Limit == 0 {
		a.Limit = AuditLimitDefault
	}
	return a, nil
}
