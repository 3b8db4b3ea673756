package pake

import (
	"bytes"
	"crypto"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"testing"

	bksf "github.com/bytemare/ksf"
	"github.com/bytemare/opaque"
)

// evaluationOf returns the OPRF evaluation the v1 server computes for a
// KE1: the first 32 bytes of its KE2 (CredentialResponse.evaluated_message).
func evaluationOf(t *testing.T, srv *Server, credID, record, ke1 []byte) []byte {
	t.Helper()
	ke2, _, err := srv.GenerateKE2(credID, record, ke1)
	if err != nil {
		t.Fatal(err)
	}
	return ke2[:EvaluatedElementSize]
}

// TestKE2FromEvaluationMatchesBytemare gives bytemare/opaque's GenerateKE2
// and ke2FromEvaluation the same masking nonce, key-share seed and server
// nonce, and the evaluation bytemare computed: KE2 (hence the server MAC the
// client checks) and the expected client MAC must be byte for byte the
// same, in Coffer's own configuration (empty context, default identities).
// Then the client logs in against it.
func TestKE2FromEvaluationMatchesBytemare(t *testing.T) {
	srv, _ := newTestServer(t)
	credID := CredentialID("bob", 3)
	pw := []byte("tr0ub4dor&3")
	record, regExport := register(t, testClient, srv, credID, pw, TestKSF)
	for i := range 3 {
		st, ke1, err := testClient.LoginStart(pw)
		if err != nil {
			t.Fatal(err)
		}
		rnd := &ke2Randomness{
			maskingNonce: bytes.Repeat([]byte{byte(1 + i)}, 32),
			keyshareSeed: bytes.Repeat([]byte{byte(2 + i)}, 32),
			serverNonce:  bytes.Repeat([]byte{byte(3 + i)}, 32),
		}
		want, wantMAC, err := srv.generateKE2(credID, record, ke1, &opaque.ServerOptions{
			AKE:          &opaque.AKEOptions{SecretKeyShareSeed: rnd.keyshareSeed, Nonce: rnd.serverNonce},
			MaskingNonce: rnd.maskingNonce,
		})
		if err != nil {
			t.Fatal(err)
		}
		got, gotMAC, _, err := srv.ke2FromEvaluation(record, ke1, want[:EvaluatedElementSize], rnd)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("KE2 differs from bytemare's:\n got %x\nwant %x", got, want)
		}
		if !bytes.Equal(gotMAC, wantMAC) {
			t.Fatalf("expected client MAC differs from bytemare's")
		}
		// The server MAC is KE2's last 64 bytes: compared above as part of KE2.
		ke3, export, _, err := testClient.LoginFinish(st, pw, got, TestKSF)
		if err != nil {
			t.Fatal(err)
		}
		if !VerifyKE3(ke3, gotMAC) || !bytes.Equal(export, regExport) {
			t.Fatal("login against the KE2 from the evaluation failed")
		}
	}
}

// TestLoginThroughEvaluation runs logins with fresh randomness through
// KE2FromEvaluation: the right password logs in (KE3 verifies, the export
// key is the registration's), a wrong one gets ErrWrongPassword, and the
// fake path gets ErrWrongPassword; RegistrationResponseFromEvaluation gives
// the v1 server's response.
func TestLoginThroughEvaluation(t *testing.T) {
	srv, keys := newTestServer(t)
	v2, err := NewServer(&ServerKeys{PrivateKey: keys.PrivateKey, PublicKey: keys.PublicKey})
	if err != nil {
		t.Fatal(err)
	}
	credID := CredentialID("carol", 1)
	pw := []byte("hunter2 but longer")

	// Registration through the v2 server.
	rst, req, err := testClient.RegistrationStart(pw)
	if err != nil {
		t.Fatal(err)
	}
	v1resp, err := srv.RegistrationResponse(credID, req)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := v2.RegistrationResponseFromEvaluation(v1resp[:EvaluatedElementSize])
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(resp, v1resp) {
		t.Fatal("RegistrationResponseFromEvaluation differs from RegistrationResponse")
	}
	record, regExport, err := testClient.RegistrationFinish(rst, pw, resp, TestKSF)
	if err != nil {
		t.Fatal(err)
	}

	try := func(password []byte, fake bool) (error, bool, []byte) {
		st, ke1, err := testClient.LoginStart(password)
		if err != nil {
			t.Fatal(err)
		}
		var ke2, mac []byte
		if fake {
			z := evaluationOf(t, srv, CredentialID("nobody", 0), record, ke1)
			ke2, mac, err = v2.FakeKE2FromEvaluation(ke1, z)
		} else {
			ke2, mac, err = v2.KE2FromEvaluation(record, ke1, evaluationOf(t, srv, credID, record, ke1))
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(ke2) != KE2Size || len(mac) != KE3Size {
			t.Fatalf("sizes %d, %d", len(ke2), len(mac))
		}
		ke3, export, _, err := testClient.LoginFinish(st, password, ke2, TestKSF)
		return err, VerifyKE3(ke3, mac), export
	}
	if err, ok, export := try(pw, false); err != nil || !ok || !bytes.Equal(export, regExport) {
		t.Fatalf("right password: err=%v verified=%v", err, ok)
	}
	if err, ok, _ := try([]byte("wrong"), false); !errors.Is(err, ErrWrongPassword) || ok {
		t.Fatalf("wrong password: err=%v verified=%v", err, ok)
	}
	if err, ok, _ := try(pw, true); !errors.Is(err, ErrWrongPassword) || ok {
		t.Fatalf("fake record: err=%v verified=%v", err, ok)
	}
	// The v1 methods refuse on the seedless server.
	if _, _, err := v2.GenerateKE2(credID, record, make([]byte, KE1Size)); !errors.Is(err, ErrNoOPRFSeed) {
		t.Fatalf("GenerateKE2 on a seedless server: %v", err)
	}
	if _, _, err := v2.FakeKE2(credID, make([]byte, KE1Size)); !errors.Is(err, ErrNoOPRFSeed) {
		t.Fatalf("FakeKE2 on a seedless server: %v", err)
	}
}

// TestEvaluationMalformed feeds the v2 functions bad sizes, the identity
// element and non-canonical encodings: each is refused with ErrMalformed,
// none panics.
func TestEvaluationMalformed(t *testing.T) {
	srv, _ := newTestServer(t)
	credID := CredentialID("dave", 1)
	pw := []byte("pw")
	record, _ := register(t, testClient, srv, credID, pw, TestKSF)
	_, ke1, err := testClient.LoginStart(pw)
	if err != nil {
		t.Fatal(err)
	}
	z := evaluationOf(t, srv, credID, record, ke1)
	identity := make([]byte, 32)
	nonCanonical := bytes.Repeat([]byte{0xff}, 32)
	badKE1 := bytes.Clone(ke1)
	copy(badKE1[64:], identity)
	cases := []struct {
		name                string
		record, ke1, evaled []byte
	}{
		{"short record", record[:100], ke1, z},
		{"identity client key", append(bytes.Clone(identity), record[32:]...), ke1, z},
		{"short KE1", record, ke1[:95], z},
		{"identity blinded", record, append(bytes.Clone(identity), ke1[32:]...), z},
		{"identity keyshare", record, badKE1, z},
		{"short evaluation", record, ke1, z[:31]},
		{"identity evaluation", record, ke1, identity},
		{"non-canonical evaluation", record, ke1, nonCanonical},
	}
	for _, c := range cases {
		if _, _, err := srv.KE2FromEvaluation(c.record, c.ke1, c.evaled); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", c.name, err)
		}
	}
	for _, e := range [][]byte{nil, identity, nonCanonical, z[:5]} {
		if _, err := srv.RegistrationResponseFromEvaluation(e); !errors.Is(err, ErrMalformed) {
			t.Errorf("RegistrationResponseFromEvaluation(%x): %v", e, err)
		}
		if _, err := RegistrationBlindedElement(e); !errors.Is(err, ErrMalformed) {
			t.Errorf("RegistrationBlindedElement(%x): %v", e, err)
		}
	}
	if _, err := BlindedElement(badKE1); !errors.Is(err, ErrMalformed) {
		t.Errorf("BlindedElement with an identity key share: %v", err)
	}
}

// TestV1RecordStillLogsIn: the RFC 9807 context enters only the AKE
// preamble, not the envelope or the record, so records registered while the
// context was "coffer vault v1" log in with the empty context. Two records:
// testdata/v1_record.json, registered by the code at commit 3e24deb (before
// the change), and one registered now through a suite with the old context.
func TestV1RecordStillLogsIn(t *testing.T) {
	b, err := os.ReadFile("testdata/v1_record.json")
	if err != nil {
		t.Fatal(err)
	}
	var fx map[string]string
	if err := json.Unmarshal(b, &fx); err != nil {
		t.Fatal(err)
	}
	h := func(k string) []byte {
		d, err := hex.DecodeString(fx[k])
		if err != nil || len(d) == 0 {
			t.Fatalf("fixture %s: %v", k, err)
		}
		return d
	}
	if fx["context"] != ContextV1 {
		t.Fatalf("fixture context %q", fx["context"])
	}
	srv, err := NewServer(&ServerKeys{OPRFSeed: h("oprf_seed"), PrivateKey: h("server_private_key"), PublicKey: h("server_public_key")})
	if err != nil {
		t.Fatal(err)
	}
	r := login(t, testClient, srv, h("credential_identifier"), h("record"), h("password"), TestKSF)
	if r.err != nil || !r.serverOK || !bytes.Equal(r.exportKey, h("export_key")) {
		t.Fatalf("v1 fixture record: err=%v serverOK=%v", r.err, r.serverOK)
	}

	// Registered now under the old context, logged in under the new one.
	oldSuite := newSuite(&opaque.Configuration{
		OPRF: opaque.RistrettoSha512, AKE: opaque.RistrettoSha512, KSF: bksf.Argon2id,
		KDF: crypto.SHA512, MAC: crypto.SHA512, Hash: crypto.SHA512,
		Context: []byte(ContextV1),
	}, true, nil, nil)
	_, keys := newTestServer(t)
	oldSrv, err := newServer(oldSuite, keys)
	if err != nil {
		t.Fatal(err)
	}
	oldClient := Client{AllowWeakKSF: true, suite: oldSuite}
	credID := CredentialID("erin", 2)
	pw := []byte("registered under v1")
	record, export := register(t, oldClient, oldSrv, credID, pw, TestKSF)
	newSrv, err := NewServer(keys)
	if err != nil {
		t.Fatal(err)
	}
	r = login(t, testClient, newSrv, credID, record, pw, TestKSF)
	if r.err != nil || !r.serverOK || !bytes.Equal(r.exportKey, export) {
		t.Fatalf("record registered under the old context: err=%v serverOK=%v", r.err, r.serverOK)
	}
	// And the contexts really differ on the wire: an old-context client
	// cannot log in against the new server (that is the serenity-kit bug
	// the change fixes, in reverse).
	r = login(t, oldClient, newSrv, credID, record, pw, TestKSF)
	if !errors.Is(r.err, ErrWrongPassword) {
		t.Fatalf("old-context client against the empty context: %v, want ErrWrongPassword", r.err)
	}
}
