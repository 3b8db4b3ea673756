package channel

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hpke"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/cryptotest"

	vaultv1 "github.com/cofferhq/coffer/internal/protocol/vaultv1"
)

// The test vectors in testdata/ were written once by
//
//	go test ./internal/protocol/channel -run TestVectors -update
//
// with Go's deterministic test randomness (testing/cryptotest) seeded with
// 1. HPKE encapsulation and response nonces are randomized and Go does not promise the same
// random stream across releases, so a rerun on another Go version may write
// different (equally valid) bytes; the committed files are what other
// implementations should check against, and TestVectors opens every one.
//
// A file is "field: value" lines (binary values in lowercase hex):
//
//	expect: ok | open_error | unsupported_version | response_open_error | response_unsupported_version
//	comment: what the vector exercises
//	private-key: the fleet's HPKE private key (32-byte seed, RFC 9180 SerializePrivateKey)
//	fleet-id: 16 bytes
//	account: the account the relay asserts (text)
//	sealed-request: the sealed request
//	request: the plaintext (a marshalled coffer.vault.v1.Request) (ok and response_* only)
//	response-secret: Export("coffer vault v1 response", 32) (ok and response_* only)
//	request-id: the AAD of the response (ok and response_* only)
//	sealed-response: the sealed response (ok and response_* only)
//	response: its plaintext (a marshalled coffer.vault.v1.Response) (ok only)
var update = flag.Bool("update", false, "rewrite channel/testdata (random bytes differ from the committed ones)")

type chVector struct {
	name, expect, comment string
	key                   []byte
	fleetID               [16]byte
	account               string
	sealedRequest         []byte
	request               []byte
	responseSecret        []byte
	requestID             []byte
	sealedResponse        []byte
	response              []byte
}

func (v *chVector) encode() []byte {
	var w bytes.Buffer
	line := func(k string, b []byte) {
		if b != nil {
			fmt.Fprintf(&w, "%s: %x\n", k, b)
		}
	}
	fmt.Fprintf(&w, "expect: %s\ncomment: %s\n", v.expect, v.comment)
	line("private-key", v.key)
	line("fleet-id", v.fleetID[:])
	fmt.Fprintf(&w, "account: %s\n", v.account)
	line("sealed-request", v.sealedRequest)
	line("request", v.request)
	line("response-secret", v.responseSecret)
	line("request-id", v.requestID)
	line("sealed-response", v.sealedResponse)
	line("response", v.response)
	return w.Bytes()
}

func parseChVector(b []byte) (*chVector, error) {
	v := &chVector{}
	for _, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		k, val, ok := strings.Cut(line, ": ")
		if !ok {
			return nil, fmt.Errorf("bad line %q", line)
		}
		var dst *[]byte
		switch k {
		case "expect":
			v.expect = val
		case "comment":
			v.comment = val
		case "account":
			v.account = val
		case "fleet-id":
			id, err := hex.DecodeString(val)
			if err != nil || len(id) != 16 {
				return nil, fmt.Errorf("bad fleet-id")
			}
			v.fleetID = [16]byte(id)
		case "private-key":
			dst = &v.key
		case "sealed-request":
			dst = &v.sealedRequest
		case "request":
			dst = &v.request
		case "response-secret":
			dst = &v.responseSecret
		case "request-id":
			dst = &v.requestID
		case "sealed-response":
			dst = &v.sealedResponse
		case "response":
			dst = &v.response
		default:
			return nil, fmt.Errorf("unknown field %q", k)
		}
		if dst != nil {
			h, err := hex.DecodeString(val)
			if err != nil {
				return nil, fmt.Errorf("%s: %v", k, err)
			}
			*dst = h
		}
	}
	return v, nil
}

func makeChVectors(t *testing.T) []*chVector {
	cryptotest.SetGlobalRandom(t, 1)
	kem := hpke.MLKEM768X25519()
	k1, err := kem.DeriveKeyPair([]byte("coffer channel test vector key 1"))
	if err != nil {
		t.Fatal(err)
	}
	k2, _ := kem.DeriveKeyPair([]byte("coffer channel test vector key 2"))
	key := &PrivateKey{k: k1}
	seed, other := key.Bytes(), (&PrivateKey{k: k2}).Bytes()
	fleetID := [16]byte{0xc0, 0xff, 0xee, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
	r := NewRecipient(key, fleetID)

	type exchange struct {
		sealed, req, respKey, id, sealedResp, resp []byte
	}
	run := func(account string, req *vaultv1.Request, resp *vaultv1.Response) exchange {
		reqB := marshal(t, req)
		sealed, _, err := Seal(key.PublicKey(), fleetID, account, reqB)
		if err != nil {
			t.Fatal(err)
		}
		_, responder, err := r.Open(sealed, account)
		if err != nil {
			t.Fatal(err)
		}
		respB := marshal(t, resp)
		sr, err := responder.Seal(respB, req.RequestId)
		if err != nil {
			t.Fatal(err)
		}
		return exchange{sealed, reqB, exportKey(t, seed, fleetID, sealed), req.RequestId, sr, respB}
	}
	id1 := []byte("0123456789abcdef")
	status := run("alice@example.com",
		&vaultv1.Request{Account: "alice@example.com", RequestId: id1, TimeUnixMs: 1767225600000, Op: &vaultv1.Request_Status{Status: &vaultv1.Status{}}},
		&vaultv1.Response{RequestId: id1, Result: &vaultv1.Response_Status{Status: &vaultv1.StatusResult{Registered: true, GuessLimit: 10, Epoch: 1}}})
	id2 := []byte("fedcba9876543210")
	login := run("user-42",
		&vaultv1.Request{Account: "user-42", RequestId: id2, TimeUnixMs: 1767225601000, Op: &vaultv1.Request_LoginStart{LoginStart: &vaultv1.LoginStart{Ke1: bytes.Repeat([]byte{0x5a}, 96)}}},
		&vaultv1.Response{RequestId: id2, Result: &vaultv1.Response_LoginStart{LoginStart: &vaultv1.LoginStartResult{Ke2: bytes.Repeat([]byte{0xa5}, 320), LoginId: []byte("login-1"), GuessesUsed: 1, GuessLimit: 10}}})

	good := func(name, comment, account string, e exchange) *chVector {
		return &chVector{name: name, expect: "ok", comment: comment, key: seed, fleetID: fleetID, account: account,
			sealedRequest: e.sealed, request: e.req, responseSecret: e.respKey, requestID: e.id, sealedResponse: e.sealedResp, response: e.resp}
	}
	reqFail := func(name, expect, comment string, sealed []byte, edit func(*chVector)) *chVector {
		v := &chVector{name: name, expect: expect, comment: comment, key: seed, fleetID: fleetID, account: "alice@example.com", sealedRequest: sealed}
		if edit != nil {
			edit(v)
		}
		return v
	}
	flip := func(b []byte, i int) []byte {
		b = bytes.Clone(b)
		b[i] ^= 0x01
		return b
	}
	respFail := func(name, expect, comment string, sealedResp, id []byte) *chVector {
		v := good(name, comment, "alice@example.com", status)
		v.expect, v.sealedResponse, v.requestID, v.response = expect, sealedResp, id, nil
		return v
	}
	s := status.sealed
	n := len(s)
	return []*chVector{
		good("good_status", "a Status request and its answer", "alice@example.com", status),
		good("good_login_start", "a LoginStart request (KE1) and its answer (KE2)", "user-42", login),
		reqFail("fail_version", "unsupported_version", "version byte 0x02", func() []byte { b := bytes.Clone(s); b[0] = 2; return b }(), nil),
		reqFail("fail_flipped_mlkem_ciphertext", "open_error", "one bit flipped in the ML-KEM-768 part of enc", flip(s, 1+500), nil),
		reqFail("fail_flipped_x25519_share", "open_error", "one bit flipped in the X25519 part of enc", flip(s, 1+EncapsulatedKeySize-5), nil),
		reqFail("fail_flipped_ciphertext", "open_error", "one bit flipped in the ciphertext", flip(s, 1+EncapsulatedKeySize+3), nil),
		reqFail("fail_flipped_tag", "open_error", "one bit flipped in the AEAD tag", flip(s, n-1), nil),
		reqFail("fail_truncated", "open_error", "the last byte cut", s[:n-1], nil),
		reqFail("fail_too_short", "open_error", "only the version byte and enc", s[:1+EncapsulatedKeySize], nil),
		reqFail("fail_wrong_account", "open_error", "sealed for alice@example.com, asserted as bob@example.com", s,
			func(v *chVector) { v.account = "bob@example.com" }),
		reqFail("fail_wrong_fleet_id", "open_error", "opened with another fleet id in info", s,
			func(v *chVector) { v.fleetID[15] ^= 1 }),
		reqFail("fail_wrong_key", "open_error", "opened with another fleet's private key", s,
			func(v *chVector) { v.key = other }),
		respFail("fail_response_wrong_request_id", "response_open_error", "the response opened under another request id", status.sealedResp, id2),
		respFail("fail_response_flipped", "response_open_error", "one bit flipped in the sealed response", flip(status.sealedResp, 5), id1),
		respFail("fail_response_of_other_request", "response_open_error", "the response to another request (another response key) with this request's id",
			sealResponseWith(t, login.respKey, login.sealed[1:1+EncapsulatedKeySize], login.resp, id1), id1),
		respFail("fail_response_truncated", "response_open_error", "the last byte of the response cut", status.sealedResp[:len(status.sealedResp)-1], id1),
		respFail("fail_response_version", "response_unsupported_version", "response version byte 0x02",
			func() []byte { b := bytes.Clone(status.sealedResp); b[0] = 2; return b }(), id1),
	}
}

// exportKey derives the response key with crypto/hpke directly, apart from
// the package's code.
func exportKey(t testing.TB, seed []byte, fleetID [16]byte, sealed []byte) []byte {
	k, err := hpke.MLKEM768X25519().NewPrivateKey(seed)
	if err != nil {
		t.Fatal(err)
	}
	r, err := hpke.NewRecipient(sealed[1:1+EncapsulatedKeySize], k, hpke.HKDFSHA256(), hpke.AES256GCM(),
		append([]byte("coffer vault v1"), fleetID[:]...))
	if err != nil {
		t.Fatal(err)
	}
	key, err := r.Export("coffer vault v1 response", 32)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// responseAEAD, sealResponseWith and openResponseWith implement the
// response encapsulation apart from the package's code.
func responseAEAD(t testing.TB, secret, enc, respNonce []byte) (cipher.AEAD, []byte) {
	prk, err := hkdf.Extract(sha256.New, secret, append(bytes.Clone(enc), respNonce...))
	if err != nil {
		t.Fatal(err)
	}
	key, _ := hkdf.Expand(sha256.New, prk, "key", 32)
	nonce, _ := hkdf.Expand(sha256.New, prk, "nonce", 12)
	b, _ := aes.NewCipher(key)
	g, _ := cipher.NewGCM(b)
	return g, nonce
}

func sealResponseWith(t testing.TB, secret, enc, pt, id []byte) []byte {
	rn := make([]byte, 32)
	rand.Read(rn)
	g, nonce := responseAEAD(t, secret, enc, rn)
	return g.Seal(append([]byte{1}, rn...), nonce, pt, id)
}

func openResponseWith(t testing.TB, secret, enc, sealed, id []byte) ([]byte, error) {
	if len(sealed) < 1+32+16 || sealed[0] != 1 {
		return nil, errors.New("bad framing")
	}
	g, nonce := responseAEAD(t, secret, enc, sealed[1:33])
	return g.Open(nil, nonce, sealed[33:], id)
}

func TestVectors(t *testing.T) {
	if *update {
		old, _ := filepath.Glob("testdata/*_*")
		for _, f := range old {
			os.Remove(f)
		}
		for _, v := range makeChVectors(t) {
			if err := os.WriteFile(filepath.Join("testdata", v.name), v.encode(), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	files, err := filepath.Glob("testdata/*_*")
	if err != nil || len(files) < 15 {
		t.Fatalf("found %d vectors (%v); run: go test ./internal/protocol/channel -run TestVectors -update", len(files), err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			v, err := parseChVector(data)
			if err != nil {
				t.Fatal(err)
			}
			checkChVector(t, v)
		})
	}
}

func checkChVector(t *testing.T, v *chVector) {
	key, err := NewPrivateKey(v.key)
	if err != nil {
		t.Fatal(err)
	}
	req, responder, err := NewRecipient(key, v.fleetID).Open(v.sealedRequest, v.account)
	switch v.expect {
	case "open_error":
		if !errors.Is(err, ErrOpen) {
			t.Fatalf("Open: %v, want ErrOpen", err)
		}
		return
	case "unsupported_version":
		if !errors.Is(err, ErrUnsupportedVersion) {
			t.Fatalf("Open: %v, want ErrUnsupportedVersion", err)
		}
		return
	case "ok", "response_open_error", "response_unsupported_version":
	default:
		t.Fatalf("unknown expect %q", v.expect)
	}
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if !bytes.Equal(req, v.request) {
		t.Fatal("request plaintext differs")
	}
	enc := v.sealedRequest[1 : 1+EncapsulatedKeySize]
	if got := exportKey(t, v.key, v.fleetID, v.sealedRequest); !bytes.Equal(got, v.responseSecret) {
		t.Fatal("response secret differs")
	}
	if !bytes.Equal(responder.r.secret, v.responseSecret) {
		t.Fatal("the Responder derived another response secret")
	}
	// The client's opener, built as Seal builds it.
	resp, err := (&ResponseOpener{r: responseKeys{secret: v.responseSecret, enc: enc}}).Open(v.sealedResponse, v.requestID)
	switch v.expect {
	case "ok":
		if err != nil {
			t.Fatalf("opening the response: %v", err)
		}
		if !bytes.Equal(resp, v.response) {
			t.Fatal("response plaintext differs")
		}
		if pt, err := openResponseWith(t, v.responseSecret, enc, v.sealedResponse, v.requestID); err != nil || !bytes.Equal(pt, v.response) {
			t.Fatalf("independent implementation: %v", err)
		}
		// And what the package's Responder seals, the independent code opens.
		again, err := responder.Seal(v.response, v.requestID)
		if err != nil {
			t.Fatal(err)
		}
		if pt, err := openResponseWith(t, v.responseSecret, enc, again, v.requestID); err != nil || !bytes.Equal(pt, v.response) {
			t.Fatalf("independent implementation on Responder.Seal output: %v", err)
		}
	case "response_open_error":
		if !errors.Is(err, ErrOpen) {
			t.Fatalf("opening the response: %v, want ErrOpen", err)
		}
	case "response_unsupported_version":
		if !errors.Is(err, ErrUnsupportedVersion) {
			t.Fatalf("opening the response: %v, want ErrUnsupportedVersion", err)
		}
	}
}
