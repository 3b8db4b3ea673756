// Package wire holds the contract between a relay and the vault replicas
// behind it, beyond the RPC messages themselves (PROTOCOL.md section 3,
// "Relay ↔ vault"): the header names both sides read and write, and the
// one error a replica that is not the leader answers with.
//
// Both the relay and the vault import this package; neither imports the
// other.
package wire

import (
	"errors"

	"connectrpc.com/connect"
)

// Header names.
const (
	// LeaderHeader names the leader's base URL in a vault replica's
	// Unavailable answer. Build such an answer with NotLeaderError.
	LeaderHeader = "Coffer-Leader"
	// RequestIDHeader carries the relay's request id, in the response to the
	// client and in the request to the vault, to match log lines.
	RequestIDHeader = "Coffer-Request-Id"
	// ForwardedByHeader marks a request a follower forwarded to the leader:
	// its value is the follower's replica id. A replica never forwards a
	// request that carries it, so a request makes at most one hop between
	// replicas whatever the replicas believe about leadership.
	ForwardedByHeader = "Coffer-Forwarded-By"
)

// NotLeaderError is the answer a vault replica that is not the leader gives
// a relay: code Unavailable with the leader's base URL in the LeaderHeader
// (absent if the replica knows no leader). The relay retries there.
func NotLeaderError(leaderBaseURL string) *connect.Error {
	e := connect.NewError(connect.CodeUnavailable, errors.New("this vault replica is not the leader"))
	if leaderBaseURL != "" {
		e.Meta().Set(LeaderHeader, leaderBaseURL)
	}
	return e
}

// LeaderHint is the leader's base URL a replica named in err (a
// NotLeaderError), or "" if err names none.
func LeaderHint(err error) string {
	var ce *connect.Error
	if errors.As(err, &ce) && ce.Code() == connect.CodeUnavailable {
		return ce.Meta().Get(LeaderHeader)
	}
	return ""
}
