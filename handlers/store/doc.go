// Package store keeps the locker's state in one bbolt file: doors, partners,
// users, reservations with their code index, the door cycles in flight, the
// audit trail and the upstream outbox.
//
// Codes are never stored in plain: only HMAC-SHA256(code key, code). Every
// change that the back-end must learn of is written in the same transaction as
// its outbox message, so a crash at any point leaves both or neither.
//
// Only this package touches the database. Its place in the layering: on the
// contract (handlers/contract), below the handlers that own its data; it
// imports no other package of the locker than the contract.
package store
