package relay

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"

	"connectrpc.com/connect"
	"github.com/cofferhq/coffer/internal/protocol/channel"
	vaultv1 "github.com/cofferhq/coffer/internal/protocol/vaultv1"
	"google.golang.org/protobuf/proto"
)

// channelVault answers like a real vault's channel layer: it opens the
// sealed request for the account the relay asserts and seals a Status
// answer back.
func channelVault(t *testing.T, key *channel.PrivateKey, fleetID [16]byte) func(context.Context, *vaultv1.VaultExchangeRequest) (*vaultv1.ExchangeResponse, error) {
	r := channel.NewRecipient(key, fleetID)
	return func(_ context.Context, in *vaultv1.VaultExchangeRequest) (*vaultv1.ExchangeResponse, error) {
		pt, responder, err := r.Open(in.Sealed, in.Account)
		if err != nil {
			return nil, connect.NewError(connect.CodeInvalidArgument, err)
		}
		var req vaultv1.Request
		if err := proto.Unmarshal(pt, &req); err != nil || req.Account != in.Account {
			return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("bad request"))
		}
		resp, _ := proto.Marshal(&vaultv1.Response{RequestId: req.RequestId,
			Result: &vaultv1.Response_Status{Status: &vaultv1.StatusResult{Registered: true}}})
		sealed, err := responder.Seal(resp, req.RequestId)
		if err != nil {
			return nil, connect.NewError(connect.CodeInternal, err)
		}
		return &vaultv1.ExchangeResponse{Sealed: sealed}, nil
	}
}

// flipRequest is a tampering hop between relay and vault: it flips one bit
// near the end of the request body, inside the sealed bytes (the last
// field of VaultExchangeRequest).
func flipRequest(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if len(body) > 8 {
			body[len(body)-5] ^= 0x01
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
		next.ServeHTTP(w, r)
	})
}

// flipResponse flips one bit near the end of a successful response body,
// inside the sealed response.
func flipResponse(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := httptest.NewRecorder()
		next.ServeHTTP(rec, r)
		body := rec.Body.Bytes()
		if rec.Code == 200 && len(body) > 8 {
			body[len(body)-5] ^= 0x01
		}
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(rec.Code)
		w.Write(body)
	})
}

func sealStatus(t *testing.T, pub *channel.PublicKey, fleetID [16]byte, account string) ([]byte, *channel.ResponseOpener, []byte) {
	t.Helper()
	id := make([]byte, 16)
	rand.Read(id)
	pt, _ := proto.Marshal(&vaultv1.Request{Account: account, RequestId: id, TimeUnixMs: 1, Op: &vaultv1.Request_Status{Status: &vaultv1.Status{}}})
	sealed, opener, err := channel.Seal(pub, fleetID, account, pt)
	if err != nil {
		t.Fatal(err)
	}
	return sealed, opener, id
}

func TestSealedChannelThroughRelay(t *testing.T) {
	key, err := channel.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	fleetID := [16]byte{9, 9, 9}
	setup := func(wrap func(http.Handler) http.Handler) (*testEnv, *fakeVault) {
		v := newFakeVault(t, wrap)
		v.setAnswer(channelVault(t, key, fleetID))
		return startRelay(t, Config{}, v.srv.URL), v
	}

	t.Run("honest relay", func(t *testing.T) {
		e, _ := setup(nil)
		sealed, opener, id := sealStatus(t, key.PublicKey(), fleetID, "alice")
		resp, _, err := call(e.client(t, connectH2C), "Bearer "+e.token(t, "alice"), sealed)
		if err != nil {
			t.Fatal(err)
		}
		pt, err := opener.Open(resp.Sealed, id)
		if err != nil {
			t.Fatal(err)
		}
		var r vaultv1.Response
		if err := proto.Unmarshal(pt, &r); err != nil || !bytes.Equal(r.RequestId, id) || !r.GetStatus().GetRegistered() {
			t.Fatalf("response %v %v", &r, err)
		}
	})

	t.Run("request tampered in transit", func(t *testing.T) {
		e, _ := setup(flipRequest)
		sealed, _, _ := sealStatus(t, key.PublicKey(), fleetID, "alice")
		_, _, err := call(e.client(t, connectHTTP1), "Bearer "+e.token(t, "alice"), sealed)
		wantCode(t, err, connect.CodeInvalidArgument, "did not open")
	})

	t.Run("response tampered in transit", func(t *testing.T) {
		e, _ := setup(flipResponse)
		sealed, opener, id := sealStatus(t, key.PublicKey(), fleetID, "alice")
		resp, _, err := call(e.client(t, connectHTTP1), "Bearer "+e.token(t, "alice"), sealed)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := opener.Open(resp.Sealed, id); !errors.Is(err, channel.ErrOpen) {
			t.Fatalf("tampered response: %v", err)
		}
	})

	t.Run("request moved to another account", func(t *testing.T) {
		e, _ := setup(nil)
		// A relay (or a holder of bob's token) presents alice's sealed
		// request as bob's.
		sealed, _, _ := sealStatus(t, key.PublicKey(), fleetID, "alice")
		_, _, err := call(e.client(t, connectHTTP1), "Bearer "+e.token(t, "bob"), sealed)
		wantCode(t, err, connect.CodeInvalidArgument, "did not open")
	})
}
