// Package state is the vault's replicated state machine: the guess budget
// and the records of PROTOCOL.md section 5, as a pure, deterministic
// function of the log of commands, stored in a bbolt file.
//
// It has no networking, no clock and no randomness. Everything
// nondeterministic — the time, login ids, the client MAC a valid KE3 will
// carry (computed by the leader with OPAQUE), ticket hashes — is decided by
// the leader and carried in the Command, so every replica that applies the
// same log reaches the same state and the same results. The package does not
// import Raft: vault/replica orders the commands and hands them to
// Machine.Apply / Machine.ApplyBatch as Entries.
//
// Accounts are keyed by record id (HMAC-SHA-256(recordIdKey, account),
// computed by the caller); the machine never sees account ids.
//
// The flow of a login, as the leader drives it:
//
//	acc := m.Account(id)                      // local read: record, epoch
//	KE2, expectedMAC := OPAQUE(acc.Record, KE1, epoch)
//	r := propose(LoginStart{Epoch, LoginID, expectedMAC})
//	// release KE2 only on *LoginStartResult; on CodeConflict recompute
//	r = propose(LoginFinish{LoginID, clientMAC(KE3), HashTicket(ticket)})
//
// Storage: bucket "records" (record id → sealed, versioned Account
// encoding), "replay" (request ids by id and by time), "members" (the fleet's
// member directory: member id → sealed URL and data centre, member.go) and
// "meta" (schema, last applied index and term, newest command time). Each Apply or
// ApplyBatch is one bbolt transaction that also stores the last applied
// index, so re-applying entries after a restart is a no-op. Snapshots stream
// a bbolt read transaction (no pause of Apply); Restore swaps the file by
// rename after checking the stream.
package vaultstate
