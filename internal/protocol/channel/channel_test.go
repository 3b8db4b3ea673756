package channel

import (
	"bytes"
	"crypto/rand"
	"errors"
	"os"
	"testing"

	vaultv1 "github.com/cofferhq/coffer/internal/protocol/vaultv1"
	"google.golang.org/protobuf/proto"
)

var testFleetID = [16]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}

func newKey(t testing.TB) *PrivateKey {
	t.Helper()
	k, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func marshal(t testing.TB, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRoundTrip(t *testing.T) {
	k := newKey(t)
	id := make([]byte, 16)
	rand.Read(id)
	req := marshal(t, &vaultv1.Request{Account: "alice", RequestId: id, TimeUnixMs: 1, Op: &vaultv1.Request_Status{Status: &vaultv1.Status{}}})

	sealed, opener, err := Seal(k.PublicKey(), testFleetID, "alice", req)
	if err != nil {
		t.Fatal(err)
	}
	if len(sealed) != Overhead+len(req) || sealed[0] != Version {
		t.Fatalf("sealed request is %d bytes, want %d", len(sealed), Overhead+len(req))
	}
	got, responder, err := NewRecipient(k, testFleetID).Open(sealed, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, req) {
		t.Fatal("request changed")
	}
	resp := marshal(t, &vaultv1.Response{RequestId: id, Result: &vaultv1.Response_Status{Status: &vaultv1.StatusResult{Registered: true}}})
	sealedResp, err := responder.Seal(resp, id)
	if err != nil {
		t.Fatal(err)
	}
	if len(sealedResp) != ResponseOverhead+len(resp) {
		t.Fatalf("sealed response is %d bytes", len(sealedResp))
	}
	gotResp, err := opener.Open(sealedResp, id)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(gotResp, resp) {
		t.Fatal("response changed")
	}
	// A second answer to the same request (as for a replay) gets its own
	// nonce, hence its own key: no key and nonce pair is ever used twice.
	replay := marshal(t, &vaultv1.Response{RequestId: id, Error: &vaultv1.Error{Code: vaultv1.Code_CODE_REPLAY}})
	sealed2, err := responder.Seal(replay, id)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(sealed2[1:1+ResponseNonceSize], sealedResp[1:1+ResponseNonceSize]) {
		t.Fatal("two responses share a response nonce")
	}
	if got, err := opener.Open(sealed2, id); err != nil || !bytes.Equal(got, replay) {
		t.Fatalf("second response: %v", err)
	}
	// Opening is repeatable on both sides (e.g. a vault retrying after a
	// leader change opens the same request again).
	if _, _, err := NewRecipient(k, testFleetID).Open(sealed, "alice"); err != nil {
		t.Fatal(err)
	}
}

func TestKeySerialization(t *testing.T) {
	k := newKey(t)
	seed := k.Bytes()
	if len(seed) != PrivateKeySize {
		t.Fatalf("private key is %d bytes", len(seed))
	}
	k2, err := NewPrivateKey(seed)
	if err != nil {
		t.Fatal(err)
	}
	pub := k.PublicKey().Bytes()
	if len(pub) != PublicKeySize || !bytes.Equal(pub, k2.PublicKey().Bytes()) {
		t.Fatal("public key does not survive the seed round trip")
	}
	p, err := ParsePublicKey(pub)
	if err != nil || !bytes.Equal(p.Bytes(), pub) {
		t.Fatalf("ParsePublicKey: %v", err)
	}
	if _, err := ParsePublicKey(pub[:PublicKeySize-1]); err == nil {
		t.Error("ParsePublicKey accepted a short key")
	}
	if _, err := NewPrivateKey(seed[:31]); err == nil {
		t.Error("NewPrivateKey accepted a short seed")
	}
	// A request sealed to the parsed key opens with the reloaded key.
	sealed, _, err := Seal(p, testFleetID, "a", []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := NewRecipient(k2, testFleetID).Open(sealed, "a"); err != nil {
		t.Fatal(err)
	}
}

// A relay that flips any single byte of a sealed request is caught.
func TestEveryByteFlipRefused(t *testing.T) {
	k := newKey(t)
	r := NewRecipient(k, testFleetID)
	sealed, _, err := Seal(k.PublicKey(), testFleetID, "alice", []byte("a request"))
	if err != nil {
		t.Fatal(err)
	}
	step := 1
	if testing.Short() {
		step = 7
	}
	for i := 0; i < len(sealed); i += step {
		bad := bytes.Clone(sealed)
		bad[i] ^= 0x80
		_, _, err := r.Open(bad, "alice")
		want := ErrOpen
		if i == 0 {
			want = ErrUnsupportedVersion
		}
		if !errors.Is(err, want) {
			t.Fatalf("flip at byte %d: err = %v, want %v", i, err, want)
		}
	}
	for _, n := range []int{0, 1, Overhead - 1, len(sealed) - 1} {
		if _, _, err := r.Open(sealed[:n], "alice"); !errors.Is(err, ErrOpen) {
			t.Errorf("truncated to %d: %v", n, err)
		}
	}
	if _, _, err := r.Open(append(bytes.Clone(sealed), 0), "alice"); !errors.Is(err, ErrOpen) {
		t.Errorf("extended: %v", err)
	}
}

// A request sealed for account A and presented as account B is refused, as
// are requests sealed to another key or another fleet id.
func TestBindings(t *testing.T) {
	k := newKey(t)
	sealed, _, err := Seal(k.PublicKey(), testFleetID, "alice", []byte("req"))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := NewRecipient(k, testFleetID).Open(sealed, "bob"); !errors.Is(err, ErrOpen) {
		t.Errorf("other account: %v", err)
	}
	if _, _, err := NewRecipient(k, testFleetID).Open(sealed, "alice\x00"); !errors.Is(err, ErrOpen) {
		t.Errorf("account with a suffix: %v", err)
	}
	if _, _, err := NewRecipient(newKey(t), testFleetID).Open(sealed, "alice"); !errors.Is(err, ErrOpen) {
		t.Errorf("other key: %v", err)
	}
	other := testFleetID
	other[15] ^= 1
	if _, _, err := NewRecipient(k, other).Open(sealed, "alice"); !errors.Is(err, ErrOpen) {
		t.Errorf("other fleet id: %v", err)
	}
}

// A response to request 1 cannot be opened as the response to request 2,
// neither by request 2's opener nor under request 2's id.
func TestResponseBinding(t *testing.T) {
	k := newKey(t)
	r := NewRecipient(k, testFleetID)
	id1, id2 := []byte("request-id-00001"), []byte("request-id-00002")
	s1, o1, _ := Seal(k.PublicKey(), testFleetID, "alice", []byte("one"))
	s2, o2, _ := Seal(k.PublicKey(), testFleetID, "alice", []byte("two"))
	_, resp1, err := r.Open(s1, "alice")
	if err != nil {
		t.Fatal(err)
	}
	_, resp2, err := r.Open(s2, "alice")
	if err != nil {
		t.Fatal(err)
	}
	out1, _ := resp1.Seal([]byte("answer one"), id1)
	out2, _ := resp2.Seal([]byte("answer two"), id2)
	if _, err := o2.Open(out1, id1); !errors.Is(err, ErrOpen) {
		t.Errorf("response 1 opened by opener 2: %v", err)
	}
	if _, err := o2.Open(out1, id2); !errors.Is(err, ErrOpen) {
		t.Errorf("response 1 opened by opener 2 under id 2: %v", err)
	}
	if _, err := o1.Open(out1, id2); !errors.Is(err, ErrOpen) {
		t.Errorf("response 1 opened under id 2: %v", err)
	}
	if got, err := o1.Open(out1, id1); err != nil || string(got) != "answer one" {
		t.Errorf("response 1: %q %v", got, err)
	}
	if got, err := o2.Open(out2, id2); err != nil || string(got) != "answer two" {
		t.Errorf("response 2: %q %v", got, err)
	}
	bad := bytes.Clone(out1)
	bad[0] = 2
	if _, err := o1.Open(bad, id1); !errors.Is(err, ErrUnsupportedVersion) {
		t.Errorf("response version 2: %v", err)
	}
	for i := 1; i < len(out1); i++ {
		bad := bytes.Clone(out1)
		bad[i] ^= 1
		if _, err := o1.Open(bad, id1); !errors.Is(err, ErrOpen) {
			t.Fatalf("response flip at %d: %v", i, err)
		}
	}
	for _, n := range []int{0, 1, ResponseOverhead - 1, len(out1) - 1} {
		if _, err := o1.Open(out1[:n], id1); !errors.Is(err, ErrOpen) {
			t.Errorf("response truncated to %d: %v", n, err)
		}
	}
}

func TestErrorsSayNothingSecret(t *testing.T) {
	for _, err := range []error{ErrOpen, ErrUnsupportedVersion} {
		if bytes.Contains([]byte(err.Error()), []byte("hpke")) {
			t.Errorf("error %q names internals", err)
		}
	}
}

func FuzzRecipientOpen(f *testing.F) {
	// The seed is a committed vector, so every fuzzing process knows the one
	// genuine request (sealing again would give other random bytes).
	data, err := os.ReadFile("testdata/good_status")
	if err != nil {
		f.Fatal(err)
	}
	v, err := parseChVector(data)
	if err != nil {
		f.Fatal(err)
	}
	k, err := NewPrivateKey(v.key)
	if err != nil {
		f.Fatal(err)
	}
	r := NewRecipient(k, v.fleetID)
	f.Add(v.sealedRequest, v.account)
	f.Add(v.sealedRequest[:Overhead], v.account)
	f.Add([]byte{1}, "")
	f.Fuzz(func(t *testing.T, data []byte, account string) {
		req, responder, err := r.Open(data, account)
		if err != nil {
			if req != nil || responder != nil {
				t.Fatal("results returned with an error")
			}
			return
		}
		if !bytes.Equal(data, v.sealedRequest) || account != v.account || !bytes.Equal(req, v.request) {
			t.Fatalf("forged request opened: %x for %q", req, account)
		}
	})
}

func FuzzResponseOpen(f *testing.F) {
	k := newKey(f)
	_, opener, _ := Seal(k.PublicKey(), testFleetID, "alice", []byte("req"))
	sealed, _, _ := Seal(k.PublicKey(), testFleetID, "alice", []byte("req"))
	_, responder, err := NewRecipient(k, testFleetID).Open(sealed, "alice")
	if err != nil {
		f.Fatal(err)
	}
	// A response sealed for another request's context: never opens.
	other, _ := responder.Seal([]byte("resp"), []byte("id"))
	f.Add(other, []byte("id"))
	f.Add([]byte{1}, []byte{})
	f.Fuzz(func(t *testing.T, data, id []byte) {
		if pt, err := opener.Open(data, id); err == nil {
			t.Fatalf("forged response opened: %q", pt)
		}
	})
}
