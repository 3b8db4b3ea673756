package devfleet

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/cofferhq/coffer/internal/server/fleetca"
	"github.com/cofferhq/coffer/internal/server/relay"
	"github.com/cofferhq/coffer/token"
)

// RelayOptions configure StartRelay.
type RelayOptions struct {
	// Keys of the fleet (LoadKeys). Required.
	Keys *Keys
	// Vaults are the base URLs of every vault replica. Required.
	Vaults []string
	// VaultTLSDir holds the relay's certificate of the fleet CA (role
	// relay: IssueRelayFiles), its key and the CA certificate, for https://
	// replicas, which refuse callers without one; empty for http://
	// replicas.
	VaultTLSDir string
	// Logger (default: discard).
	Logger *slog.Logger
}

// StartRelay runs only the relay of a development fleet whose vault
// replicas run elsewhere (separate processes: 'coffer dev --replicas N'),
// on 127.0.0.1. Close stops it; the replicas are the caller's.
func StartRelay(_ context.Context, o RelayOptions) (*Fleet, error) {
	if o.Keys == nil || len(o.Vaults) == 0 {
		return nil, errors.New("devfleet: StartRelay needs the fleet's keys and its vault URLs")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	var hc *http.Client
	if o.VaultTLSDir != "" {
		t, err := fleetca.LoadTLS(filepath.Join(o.VaultTLSDir, fleetca.CertFile), filepath.Join(o.VaultTLSDir, fleetca.KeyFile), filepath.Join(o.VaultTLSDir, fleetca.CACertFile))
		if err != nil {
			return nil, err
		}
		hc = &http.Client{Transport: &http.Transport{
			DialContext:       (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			ForceAttemptHTTP2: true, TLSClientConfig: t.ClientConfig(""),
			MaxIdleConnsPerHost: 64, IdleConnTimeout: 90 * time.Second, TLSHandshakeTimeout: 5 * time.Second,
		}}
	}
	f := newFleet(o.Keys)
	f.VaultURL, f.VaultURLs = o.Vaults[0], append([]string(nil), o.Vaults...)
	if err := f.startRelay(o.Keys, hc, o.Logger); err != nil {
		return nil, err
	}
	return f, nil
}

// startRelay serves a relay in front of f.VaultURLs on 127.0.0.1 and sets
// f.RelayURL: account tokens from keys' app backend, no rate limits. A nil
// hc is the relay's default client (http:// replicas).
func (f *Fleet) startRelay(keys *Keys, hc *http.Client, log *slog.Logger) error {
	rl, err := relay.New(relay.Config{
		Vaults:     f.VaultURLs,
		HTTPClient: hc,
		Verifier:   &token.Verifier{Key: keys.tokenPub, Issuer: Issuer, Audience: Audience, Leeway: token.DefaultLeeway},
		PerAccount: relay.Unlimited, PerSource: relay.Unlimited,
		Logger: log,
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	f.RelayURL = "http://" + ln.Addr().String()
	f.serve(rl.Handler(), ln)
	return nil
}
