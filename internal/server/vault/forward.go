package vault

import (
	"context"
	"net/http"
	"sync"

	"connectrpc.com/connect"

	"github.com/cofferhq/coffer/internal/protocol/vaultv1"
	"github.com/cofferhq/coffer/internal/protocol/vaultv1/vaultv1connect"
	"github.com/cofferhq/coffer/internal/protocol/wire"
)

// forwarder hands requests that reach a follower to the leader.
type forwarder struct {
	hc *http.Client
	mu sync.Mutex
	// clients by leader base URL; a fleet has at most a handful.
	clients map[string]vaultv1connect.VaultServiceClient
}

func (f *forwarder) client(url string) vaultv1connect.VaultServiceClient {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.clients[url]
	if !ok {
		c = vaultv1connect.NewVaultServiceClient(f.hc, url, connect.WithReadMaxBytes(64<<10))
		f.clients[url] = c
	}
	return c
}

// notLeaderAnswer is what a follower does with a request: forward it to
// the leader when it can (Config.Forward set, a leader known, the request
// not forwarded already), or answer with the leader's URL for the relay to
// retry there. A forwarded answer carries the leader's URL in
// Coffer-Leader, so the relay goes straight to the leader next time.
func (s *Server) notLeaderAnswer(ctx context.Context, in *vaultv1.VaultExchangeRequest) (*vaultv1.ExchangeResponse, error) {
	call, ok := connect.CallInfoForHandlerContext(ctx)
	if s.fwd == nil || !ok || call.RequestHeader().Get(wire.ForwardedByHeader) != "" {
		return nil, s.notLeader()
	}
	id, _ := s.cfg.Replica.Leader()
	leaderURL := s.members.url(id)
	if leaderURL == "" || id == s.cfg.Replica.ID() {
		return nil, s.notLeader()
	}
	fctx, out := connect.NewClientContext(ctx)
	out.RequestHeader().Set(wire.ForwardedByHeader, s.cfg.Replica.ID())
	if rid := call.RequestHeader().Get(wire.RequestIDHeader); rid != "" {
		out.RequestHeader().Set(wire.RequestIDHeader, rid)
	}
	resp, err := s.fwd.client(leaderURL).Exchange(fctx, in)
	if err != nil {
		s.metrics.forwards.WithLabelValues("error").Inc()
		if connect.CodeOf(err) == connect.CodeUnavailable && wire.LeaderHint(err) == "" {
			// The leader we knew could not be reached: the relay should
			// look for the new one.
			return nil, s.notLeader()
		}
		return nil, err
	}
	s.metrics.forwards.WithLabelValues("ok").Inc()
	call.ResponseHeader().Set(wire.LeaderHeader, leaderURL)
	return resp, nil
}
