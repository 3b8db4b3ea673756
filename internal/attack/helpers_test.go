package attack

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"io"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/cofferhq/coffer/internal/device/backupkey"
	"github.com/cofferhq/coffer/internal/device/recovery"
	"github.com/cofferhq/coffer/internal/protocol/channel"
	"github.com/cofferhq/coffer/internal/protocol/vaultv1"
	"github.com/cofferhq/coffer/internal/protocol/vaultv1/vaultv1connect"
	"github.com/cofferhq/coffer/internal/server/fleetca"
)

// owner is an honest device for account: the recovery client with both of
// the account's tokens.
func owner(t *testing.T, account string, opts ...func(*recovery.Settings)) *recovery.Client {
	t.Helper()
	tok, vtok, err := cluster.Tokens(account)
	if err != nil {
		t.Fatal(err)
	}
	s := recovery.Settings{Relay: cluster.RelayURL, Account: account, Token: tok, VaultToken: vtok, Bundle: cluster.Bundle,
		InsecureDevKSF: true, HTTPClient: &http.Client{Timeout: 30 * time.Second}}
	for _, o := range opts {
		o(&s)
	}
	c, err := recovery.New(s)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// enroll registers a fresh backup key for account under password.
func enroll(t *testing.T, account, password string) *backupkey.Key {
	t.Helper()
	key := backupkey.New()
	if _, err := owner(t, account).Enroll(deadline(t), []byte(password), key, recovery.Authorization{}); err != nil {
		t.Fatalf("enrolling %s: %v", account, err)
	}
	return key
}

// status is the vault's word on account, asked by its owner.
func status(t *testing.T, account string) *recovery.Status {
	t.Helper()
	st, err := owner(t, account).Status(deadline(t))
	if err != nil {
		t.Fatalf("status of %s: %v", account, err)
	}
	return st
}

// sealed is a request sealed to the fleet by whoever holds its public key —
// which is public: the relay, or anyone.
func sealed(t *testing.T, account string, req *vaultv1.Request) ([]byte, *channel.ResponseOpener) {
	t.Helper()
	req.Account = account
	req.RequestId = make([]byte, 16)
	rand.Read(req.RequestId)
	req.TimeUnixMs = time.Now().UnixMilli()
	plain, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := channel.ParsePublicKey(cluster.Bundle.HPKEPublicKey)
	if err != nil {
		t.Fatal(err)
	}
	b, opener, err := channel.Seal(pub, cluster.Bundle.FleetID, account, plain)
	if err != nil {
		t.Fatal(err)
	}
	return b, opener
}

// viaRelay sends req for account through the relay with the relay token
// relayToken (what a relay, or anyone who saw the header, holds), and
// returns the vault's answer.
func viaRelay(t *testing.T, account, relayToken string, req *vaultv1.Request) *vaultv1.Response {
	t.Helper()
	b, opener := sealed(t, account, req)
	rc := vaultv1connect.NewRelayServiceClient(http.DefaultClient, cluster.RelayURL)
	cctx, call := connect.NewClientContext(deadline(t))
	call.RequestHeader().Set("Authorization", "Bearer "+relayToken)
	out, err := rc.Exchange(cctx, &vaultv1.ExchangeRequest{Sealed: b})
	if err != nil {
		t.Fatalf("relay: %v", err)
	}
	return open(t, opener, out.GetSealed(), req.GetRequestId())
}

var (
	replicaHTTPOnce sync.Once
	replicaHTTP     *http.Client
	anonymousHTTP   *http.Client
)

// direct sends req for account straight to replica i's VaultService, as
// a relay certificate's holder can (the relay itself, or whoever stole its
// certificate), asserting whatever account it likes. It returns the answer,
// or nil and the transport error if the port refused.
func direct(t *testing.T, i int, account string, req *vaultv1.Request) (*vaultv1.Response, error) {
	t.Helper()
	directClients(t)
	return exchangeAt(t, replicaHTTP, i, account, req)
}

// directAnonymous is direct without any certificate: anyone on the network.
func directAnonymous(t *testing.T, i int, account string, req *vaultv1.Request) (*vaultv1.Response, error) {
	t.Helper()
	directClients(t)
	return exchangeAt(t, anonymousHTTP, i, account, req)
}

// directClients makes the HTTP clients of direct and directAnonymous.
func directClients(t *testing.T) {
	t.Helper()
	replicaHTTPOnce.Do(func() {
		d := cluster.RelayTLSDir
		tl, err := fleetca.LoadTLS(filepath.Join(d, fleetca.CertFile), filepath.Join(d, fleetca.KeyFile), filepath.Join(d, fleetca.CACertFile))
		if err != nil {
			t.Fatal(err)
		}
		replicaHTTP = &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{TLSClientConfig: tl.ClientConfig("")}}
		pool, err := fleetca.LoadCAPool(filepath.Join(fleetDir, "fleet", fleetca.CACertFile))
		if err != nil {
			t.Fatal(err)
		}
		anonymousHTTP = &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool},
		}}
	})
}

func exchangeAt(t *testing.T, hc *http.Client, i int, account string, req *vaultv1.Request) (*vaultv1.Response, error) {
	t.Helper()
	b, opener := sealed(t, account, req)
	vc := vaultv1connect.NewVaultServiceClient(hc, cluster.Replicas[i].URL)
	out, err := vc.Exchange(deadline(t), &vaultv1.VaultExchangeRequest{Account: account, Sealed: b})
	if err != nil {
		return nil, err
	}
	return open(t, opener, out.GetSealed(), req.GetRequestId()), nil
}

func open(t *testing.T, opener *channel.ResponseOpener, b, requestID []byte) *vaultv1.Response {
	t.Helper()
	plain, err := opener.Open(b, requestID)
	if err != nil {
		t.Fatalf("the answer does not open: %v", err)
	}
	resp := new(vaultv1.Response)
	if err := proto.Unmarshal(plain, resp); err != nil {
		t.Fatal(err)
	}
	return resp
}

// recordingTransport records the size of every request body it sends and
// every response body it receives.
type recordingTransport struct {
	mu        sync.Mutex
	sent, got []int
}

func (r *recordingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil {
		body, _ = io.ReadAll(req.Body)
		req.Body.Close()
		req.Body = io.NopCloser(bytes.NewReader(body))
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	rb, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(rb))
	r.mu.Lock()
	r.sent, r.got = append(r.sent, len(body)), append(r.got, len(rb))
	r.mu.Unlock()
	return resp, nil
}
