package pake

import (
	"bytes"
	"crypto/hkdf"
	"crypto/sha512"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"golang.org/x/crypto/argon2"
)

// testClient accepts TestKSF; every test that is not about the floor uses it.
var testClient = Client{AllowWeakKSF: true}

func newTestServer(t testing.TB) (*Server, *ServerKeys) {
	t.Helper()
	keys, err := GenerateServerKeys()
	if err != nil {
		t.Fatal(err)
	}
	srv, err := NewServer(keys)
	if err != nil {
		t.Fatal(err)
	}
	return srv, keys
}

// register runs a whole registration and returns the record and export key.
func register(t testing.TB, c Client, srv *Server, credID, password []byte, k KSF) (record, exportKey []byte) {
	t.Helper()
	st, req, err := c.RegistrationStart(password)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := srv.RegistrationResponse(credID, req)
	if err != nil {
		t.Fatal(err)
	}
	record, exportKey, err = c.RegistrationFinish(st, password, resp, k)
	if err != nil {
		t.Fatal(err)
	}
	if err := ValidateRecord(record); err != nil {
		t.Fatalf("ValidateRecord rejects a fresh record: %v", err)
	}
	return record, exportKey
}

type loginResult struct {
	ke3, exportKey, sessionKey []byte
	err                        error
	serverOK                   bool
}

// login runs a whole login against record; the server accepts if VerifyKE3 does.
func login(t testing.TB, c Client, srv *Server, credID, record, password []byte, k KSF) loginResult {
	t.Helper()
	st, ke1, err := c.LoginStart(password)
	if err != nil {
		t.Fatal(err)
	}
	ke2, mac, err := srv.GenerateKE2(credID, record, ke1)
	if err != nil {
		t.Fatal(err)
	}
	var r loginResult
	r.ke3, r.exportKey, r.sessionKey, r.err = c.LoginFinish(st, password, ke2, k)
	r.serverOK = VerifyKE3(r.ke3, mac)
	return r
}

func TestRegisterLogin(t *testing.T) {
	srv, _ := newTestServer(t)
	credID := CredentialID("alice", 1)
	pw := []byte("correct horse battery staple")
	record, regExport := register(t, testClient, srv, credID, pw, TestKSF)
	if len(record) != RecordSize || len(regExport) != ExportKeySize {
		t.Fatalf("record %d bytes, export key %d bytes", len(record), len(regExport))
	}

	r := login(t, testClient, srv, credID, record, pw, TestKSF)
	if r.err != nil {
		t.Fatal(r.err)
	}
	if !r.serverOK {
		t.Fatal("server rejects the KE3 of a right password")
	}
	if !bytes.Equal(r.exportKey, regExport) {
		t.Fatal("export key at login differs from registration")
	}
	if len(r.ke3) != KE3Size || len(r.sessionKey) != SessionKeySize {
		t.Fatalf("KE3 %d bytes, session key %d bytes", len(r.ke3), len(r.sessionKey))
	}

	// A second login gives the same export key and a fresh session key.
	r2 := login(t, testClient, srv, credID, record, pw, TestKSF)
	if r2.err != nil || !bytes.Equal(r2.exportKey, regExport) || bytes.Equal(r2.sessionKey, r.sessionKey) {
		t.Fatalf("second login: err %v, same export key %v, same session key %v",
			r2.err, bytes.Equal(r2.exportKey, regExport), bytes.Equal(r2.sessionKey, r.sessionKey))
	}
}

func TestAnyReplicaServes(t *testing.T) {
	srv, keys := newTestServer(t)
	other, err := NewServer(&ServerKeys{OPRFSeed: keys.OPRFSeed, PrivateKey: keys.PrivateKey, PublicKey: keys.PublicKey})
	if err != nil {
		t.Fatal(err)
	}
	credID := CredentialID("alice", 1)
	pw := []byte("pw")
	record, exp := register(t, testClient, srv, credID, pw, TestKSF)
	r := login(t, testClient, other, credID, record, pw, TestKSF)
	if r.err != nil || !r.serverOK || !bytes.Equal(r.exportKey, exp) {
		t.Fatalf("login on another replica: %v", r.err)
	}
}

func TestDefaultKSFRoundTrip(t *testing.T) {
	if testing.Short() {
		t.Skip("runs Argon2id with the default profile (256 MiB)")
	}
	srv, keys := newTestServer(t)
	c := Client{ServerPublicKey: keys.PublicKey} // production policy
	credID := CredentialID("alice", 1)
	pw := []byte("pw")
	record, exp := register(t, c, srv, credID, pw, DefaultKSF)
	r := login(t, c, srv, credID, record, pw, DefaultKSF)
	if r.err != nil || !r.serverOK || !bytes.Equal(r.exportKey, exp) {
		t.Fatalf("login: %v", r.err)
	}
}

func TestWrongPassword(t *testing.T) {
	srv, _ := newTestServer(t)
	credID := CredentialID("alice", 1)
	record, _ := register(t, testClient, srv, credID, []byte("right"), TestKSF)
	for _, pw := range []string{"wrong", "Right", "right ", "r"} {
		r := login(t, testClient, srv, credID, record, []byte(pw), TestKSF)
		if !errors.Is(r.err, ErrWrongPassword) {
			t.Errorf("password %q: got %v, want ErrWrongPassword", pw, r.err)
		}
		if r.ke3 != nil || r.exportKey != nil || r.sessionKey != nil || r.serverOK {
			t.Errorf("password %q: keys returned with a wrong password", pw)
		}
	}
}

func TestWrongKSFIsWrongPassword(t *testing.T) {
	srv, _ := newTestServer(t)
	credID := CredentialID("alice", 1)
	record, _ := register(t, testClient, srv, credID, []byte("pw"), TestKSF)
	other := TestKSF
	other.Time++
	if r := login(t, testClient, srv, credID, record, []byte("pw"), other); !errors.Is(r.err, ErrWrongPassword) {
		t.Fatalf("login with another KSF profile: %v", r.err)
	}
}

func TestVerifyKE3(t *testing.T) {
	srv, _ := newTestServer(t)
	credID := CredentialID("alice", 1)
	pw := []byte("pw")
	record, _ := register(t, testClient, srv, credID, pw, TestKSF)
	st, ke1, _ := testClient.LoginStart(pw)
	ke2, mac, err := srv.GenerateKE2(credID, record, ke1)
	if err != nil {
		t.Fatal(err)
	}
	ke3, _, _, err := testClient.LoginFinish(st, pw, ke2, TestKSF)
	if err != nil {
		t.Fatal(err)
	}
	if !VerifyKE3(ke3, mac) {
		t.Fatal("right KE3 rejected")
	}
	for i := range ke3 {
		bad := bytes.Clone(ke3)
		bad[i] ^= 0x01
		if VerifyKE3(bad, mac) {
			t.Fatalf("KE3 with byte %d flipped accepted", i)
		}
	}
	if VerifyKE3(ke3[:KE3Size-1], mac[:KE3Size-1]) || VerifyKE3(nil, nil) || VerifyKE3(append(ke3, 0), append(mac, 0)) {
		t.Fatal("VerifyKE3 accepts inputs of the wrong size")
	}
	if VerifyKE3(make([]byte, KE3Size), make([]byte, KE3Size)) {
		t.Fatal("VerifyKE3 accepts a zero KE3 against a zero (missing) MAC")
	}
	// The MAC of another login does not verify this one.
	_, ke1b, _ := testClient.LoginStart(pw)
	_, mac2, _ := srv.GenerateKE2(credID, record, ke1b)
	if VerifyKE3(ke3, mac2) {
		t.Fatal("KE3 verified against another login's MAC")
	}
}

func TestFakeKE2(t *testing.T) {
	srv, _ := newTestServer(t)
	credID := CredentialID("alice", 1)
	pw := []byte("pw")
	record, _ := register(t, testClient, srv, credID, pw, TestKSF)

	st, ke1, _ := testClient.LoginStart(pw)
	real, realMAC, err := srv.GenerateKE2(credID, record, ke1)
	if err != nil {
		t.Fatal(err)
	}
	unknown := CredentialID("nobody", 0)
	fake, fakeMAC, err := srv.FakeKE2(unknown, ke1)
	if err != nil {
		t.Fatal(err)
	}
	if len(fake) != len(real) || len(fake) != KE2Size || len(fakeMAC) != len(realMAC) {
		t.Fatalf("fake KE2 %d bytes / MAC %d, real %d / %d", len(fake), len(fakeMAC), len(real), len(realMAC))
	}
	// It decodes as a KE2 on the client, and the client just sees a wrong
	// password.
	if _, _, _, err := testClient.LoginFinish(st, pw, fake, TestKSF); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("client on a fake KE2: %v, want ErrWrongPassword", err)
	}
	// Its OPRF evaluation is deterministic per credential identifier, as a
	// real record's is: the same blinded element gets the same evaluation.
	fake2, _, _ := srv.FakeKE2(unknown, ke1)
	if !bytes.Equal(fake[:32], fake2[:32]) {
		t.Fatal("fake OPRF evaluation is not deterministic per credential id")
	}
	if bytes.Equal(fake[32:], fake2[32:]) {
		t.Fatal("two fake KE2s share their random parts")
	}
	// And it is the evaluation a real registration at that identifier gets.
	record2, _ := register(t, testClient, srv, unknown, pw, TestKSF)
	real2, _, _ := srv.GenerateKE2(unknown, record2, ke1)
	if !bytes.Equal(fake[:32], real2[:32]) {
		t.Fatal("fake and real OPRF evaluations differ for the same credential id")
	}
	// No KE3 a client can make verifies against a fake MAC.
	if VerifyKE3(make([]byte, KE3Size), fakeMAC) {
		t.Fatal("zero KE3 verifies a fake login")
	}
	if _, _, err := srv.FakeKE2(unknown, ke1[:10]); !errors.Is(err, ErrMalformed) {
		t.Fatalf("FakeKE2 with a short KE1: %v", err)
	}
	if _, _, err := srv.FakeKE2(nil, ke1); !errors.Is(err, ErrCredentialID) {
		t.Fatalf("FakeKE2 without credential id: %v", err)
	}
}

func TestEpochs(t *testing.T) {
	srv, _ := newTestServer(t)
	pw := []byte("pw")
	record, _ := register(t, testClient, srv, CredentialID("alice", 1), pw, TestKSF)
	for _, id := range [][]byte{CredentialID("alice", 2), CredentialID("alice", 0), CredentialID("bob", 1)} {
		if r := login(t, testClient, srv, id, record, pw, TestKSF); !errors.Is(r.err, ErrWrongPassword) {
			t.Errorf("record of alice/1 under %q: %v, want ErrWrongPassword", id, r.err)
		}
	}
}

func TestCredentialID(t *testing.T) {
	got := CredentialID("alice", 0x0102030405060708)
	want := append([]byte("alice\x00"), 1, 2, 3, 4, 5, 6, 7, 8)
	if !bytes.Equal(got, want) {
		t.Fatalf("got %x, want %x", got, want)
	}
	if e := CredentialID("", 0); len(e) != 9 {
		t.Fatalf("empty account: %x", e)
	}
	// Injective: the epoch has a fixed width at the end.
	a := CredentialID("a\x00\x00\x00\x00\x00\x00\x00\x00", 1)
	b := CredentialID("a", binary.BigEndian.Uint64([]byte{0, 0, 0, 0, 0, 0, 0, 0}))
	if bytes.Equal(a, b) {
		t.Fatal("collision")
	}
}

func TestPinnedServerKey(t *testing.T) {
	srv, _ := newTestServer(t)
	_, otherKeys := newTestServer(t)
	c := Client{AllowWeakKSF: true, ServerPublicKey: otherKeys.PublicKey}
	st, req, _ := c.RegistrationStart([]byte("pw"))
	resp, err := srv.RegistrationResponse(CredentialID("alice", 1), req)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.RegistrationFinish(st, []byte("pw"), resp, TestKSF); !errors.Is(err, ErrServerKey) {
		t.Fatalf("unpinned server key: %v, want ErrServerKey", err)
	}
	c.ServerPublicKey = srv.PublicKey()
	register(t, c, srv, CredentialID("alice", 1), []byte("pw"), TestKSF)
}

func TestStates(t *testing.T) {
	srv, _ := newTestServer(t)
	credID := CredentialID("alice", 1)
	pw := []byte("pw")

	if _, _, err := testClient.RegistrationStart(nil); !errors.Is(err, ErrEmptyPassword) {
		t.Errorf("empty password: %v", err)
	}
	if _, _, err := testClient.LoginStart([]byte{}); !errors.Is(err, ErrEmptyPassword) {
		t.Errorf("empty password: %v", err)
	}

	// A registration state is single use, and checks the password.
	st, req, _ := testClient.RegistrationStart(pw)
	resp, _ := srv.RegistrationResponse(credID, req)
	if _, _, err := testClient.RegistrationFinish(st, []byte("other"), resp, TestKSF); !errors.Is(err, ErrPasswordMismatch) {
		t.Errorf("registration with another password: %v", err)
	}
	if _, _, err := testClient.RegistrationFinish(st, pw, resp, TestKSF); !errors.Is(err, ErrStateUsed) {
		t.Errorf("reused registration state: %v", err)
	}
	if _, _, err := testClient.RegistrationFinish(nil, pw, resp, TestKSF); !errors.Is(err, ErrStateUsed) {
		t.Errorf("nil registration state: %v", err)
	}

	record, _ := register(t, testClient, srv, credID, pw, TestKSF)
	ls, ke1, _ := testClient.LoginStart(pw)
	ke2, _, _ := srv.GenerateKE2(credID, record, ke1)
	if _, _, _, err := testClient.LoginFinish(ls, []byte("other"), ke2, TestKSF); !errors.Is(err, ErrPasswordMismatch) {
		t.Errorf("login with another password: %v", err)
	}
	if _, _, _, err := testClient.LoginFinish(ls, pw, ke2, TestKSF); !errors.Is(err, ErrStateUsed) {
		t.Errorf("reused login state: %v", err)
	}
	ls, _, _ = testClient.LoginStart(pw)
	ls.Clear()
	ls.Clear()
	if _, _, _, err := testClient.LoginFinish(ls, pw, ke2, TestKSF); !errors.Is(err, ErrStateUsed) {
		t.Errorf("cleared login state: %v", err)
	}
	(*LoginState)(nil).Clear()
	(*RegistrationState)(nil).Clear()
}

func TestKSFValidate(t *testing.T) {
	ok := []KSF{
		DefaultKSF,
		{Time: 1, MemoryKiB: 19 * 1024, Threads: 1},
		{Time: 16, MemoryKiB: 4 << 20, Threads: 16},
		{Time: 1, MemoryKiB: 2 << 20, Threads: 4}, // RFC 9807's recommended profile
	}
	for _, k := range ok {
		if err := k.Validate(); err != nil {
			t.Errorf("%v: %v", k, err)
		}
	}
	weak := []KSF{TestKSF, {Time: 1, MemoryKiB: 19*1024 - 1, Threads: 1}, {Time: 3, MemoryKiB: 8, Threads: 1}}
	for _, k := range weak {
		if err := k.Validate(); !errors.Is(err, ErrKSF) {
			t.Errorf("%v: Validate gives %v, want ErrKSF", k, err)
		}
		if err := k.ValidateAllowWeak(); err != nil {
			t.Errorf("%v: ValidateAllowWeak: %v", k, err)
		}
	}
	bad := []KSF{
		{},
		{Time: 0, MemoryKiB: 64 << 10, Threads: 1},
		{Time: 1, MemoryKiB: 64 << 10, Threads: 0},
		{Time: 17, MemoryKiB: 64 << 10, Threads: 1},
		{Time: 1, MemoryKiB: 4<<20 + 1, Threads: 1},
		{Time: 1, MemoryKiB: 64 << 10, Threads: 17},
		{Time: 1, MemoryKiB: 8*4 - 1, Threads: 4},
		{Time: ^uint32(0), MemoryKiB: ^uint32(0), Threads: ^uint32(0)},
	}
	for _, k := range bad {
		if err := k.Validate(); !errors.Is(err, ErrKSF) {
			t.Errorf("%v: Validate gives %v", k, err)
		}
		if err := k.ValidateAllowWeak(); !errors.Is(err, ErrKSF) {
			t.Errorf("%v: ValidateAllowWeak gives %v", k, err)
		}
	}
	if !strings.Contains(DefaultKSF.String(), "argon2id") {
		t.Error(DefaultKSF.String())
	}
}

func TestParseKSF(t *testing.T) {
	k, err := ParseKSF(KSFAlgorithm, 2, 1024, 4)
	if err != nil || k != (KSF{Time: 2, MemoryKiB: 1024, Threads: 4}) {
		t.Fatalf("%v %v", k, err)
	}
	for _, alg := range []string{"", "Argon2id", "scrypt", strings.Repeat("x", 1000)} {
		if _, err := ParseKSF(alg, 2, 1024, 4); !errors.Is(err, ErrKSF) {
			t.Errorf("algorithm %q: %v", alg, err)
		}
	}
}

// TestClientKSFPolicy checks the client refuses, before any work, profiles
// below the floor unless AllowWeakKSF, and above the ceiling always.
func TestClientKSFPolicy(t *testing.T) {
	srv, _ := newTestServer(t)
	credID := CredentialID("alice", 1)
	pw := []byte("pw")
	strict := Client{}
	st, req, _ := strict.RegistrationStart(pw)
	resp, _ := srv.RegistrationResponse(credID, req)
	if _, _, err := strict.RegistrationFinish(st, pw, resp, TestKSF); !errors.Is(err, ErrKSF) {
		t.Fatalf("strict client registers with TestKSF: %v", err)
	}
	record, _ := register(t, testClient, srv, credID, pw, TestKSF)
	ls, ke1, _ := strict.LoginStart(pw)
	ke2, _, _ := srv.GenerateKE2(credID, record, ke1)
	if _, _, _, err := strict.LoginFinish(ls, pw, ke2, TestKSF); !errors.Is(err, ErrKSF) {
		t.Fatalf("strict client logs in with TestKSF: %v", err)
	}
	huge := KSF{Time: 1, MemoryKiB: 8 << 20, Threads: 1}
	ls, ke1, _ = testClient.LoginStart(pw)
	ke2, _, _ = srv.GenerateKE2(credID, record, ke1)
	if _, _, _, err := testClient.LoginFinish(ls, pw, ke2, huge); !errors.Is(err, ErrKSF) {
		t.Fatalf("weak-allowing client accepts an 8 GiB profile: %v", err)
	}
}

// TestKSFComputation recomputes, with the standard library and x/crypto
// only, what RFC 9807 says the client derives with Coffer's Argon2id
// parameters, and compares it with what this package produces. This pins the
// interoperability trap of bytemare/opaque (its defaults are an empty salt and
// a 32-byte output, RFC 9807's Argon2id profile uses 16 zero bytes and 64).
//
// With the OPRF blind set to 1, the registration response's evaluated element
// is the unblinded OPRF output element itself, so the test can finish the OPRF
// by hand (RFC 9497 §3.3.1):
//
//	oprf_output = SHA-512(I2OSP(len(pw), 2) || pw || I2OSP(32, 2) || element || "Finalize")
//	stretched   = Argon2id(oprf_output, salt = 16 zero bytes, t, m, p, 64)
//	rwd         = HKDF-Extract(SHA-512, salt = "", oprf_output || stretched)
//	export_key  = HKDF-Expand(SHA-512, rwd, envelope_nonce || "ExportKey", 64)
//	masking_key = HKDF-Expand(SHA-512, rwd, "MaskingKey", 64)
func TestKSFComputation(t *testing.T) {
	srv, _ := newTestServer(t)
	pw := []byte("correct horse battery staple")
	k := KSF{Time: 2, MemoryKiB: 1024, Threads: 2}
	one := coffer.group().NewScalar().One()
	st, req, err := testClient.registrationStart(pw, one)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := srv.RegistrationResponse(CredentialID("alice", 1), req)
	if err != nil {
		t.Fatal(err)
	}
	record, exportKey, err := testClient.RegistrationFinish(st, pw, resp, k)
	if err != nil {
		t.Fatal(err)
	}

	h := sha512.New()
	h.Write(binary.BigEndian.AppendUint16(nil, uint16(len(pw))))
	h.Write(pw)
	h.Write(binary.BigEndian.AppendUint16(nil, 32))
	h.Write(resp[:32])
	h.Write([]byte("Finalize"))
	oprfOutput := h.Sum(nil)
	stretched := argon2.IDKey(oprfOutput, make([]byte, 16), k.Time, k.MemoryKiB, uint8(k.Threads), 64)
	rwd, err := hkdf.Extract(sha512.New, append(bytes.Clone(oprfOutput), stretched...), nil)
	if err != nil {
		t.Fatal(err)
	}
	envelopeNonce := record[PublicKeySize+64 : PublicKeySize+64+32]
	wantExport, _ := hkdf.Expand(sha512.New, rwd, string(envelopeNonce)+"ExportKey", 64)
	wantMasking, _ := hkdf.Expand(sha512.New, rwd, "MaskingKey", 64)
	if !bytes.Equal(exportKey, wantExport) {
		t.Fatal("export key is not RFC 9807's with Argon2id(salt = 16 zero bytes, length 64)")
	}
	if !bytes.Equal(record[PublicKeySize:PublicKeySize+64], wantMasking) {
		t.Fatal("masking key is not RFC 9807's")
	}
}

func TestServerKeys(t *testing.T) {
	_, keys := newTestServer(t)
	if len(keys.OPRFSeed) != OPRFSeedSize || len(keys.PrivateKey) != PrivateKeySize || len(keys.PublicKey) != PublicKeySize {
		t.Fatal("key sizes")
	}
	other, _ := GenerateServerKeys()
	bad := []*ServerKeys{
		nil,
		{},
		{OPRFSeed: keys.OPRFSeed[:32], PrivateKey: keys.PrivateKey, PublicKey: keys.PublicKey},
		{OPRFSeed: keys.OPRFSeed, PrivateKey: keys.PrivateKey, PublicKey: other.PublicKey},
		{OPRFSeed: keys.OPRFSeed, PrivateKey: make([]byte, 32), PublicKey: keys.PublicKey},
		{OPRFSeed: keys.OPRFSeed, PrivateKey: bytes.Repeat([]byte{0xff}, 32), PublicKey: keys.PublicKey},
		{OPRFSeed: keys.OPRFSeed, PrivateKey: keys.PrivateKey, PublicKey: make([]byte, 32)},
	}
	for i, k := range bad {
		if _, err := NewServer(k); !errors.Is(err, ErrMalformed) {
			t.Errorf("bad keys %d: %v", i, err)
		}
	}
	srv, _ := NewServer(keys)
	if !bytes.Equal(srv.PublicKey(), keys.PublicKey) {
		t.Fatal("PublicKey")
	}
	k2 := *keys
	k2.OPRFSeed, k2.PrivateKey = bytes.Clone(keys.OPRFSeed), bytes.Clone(keys.PrivateKey)
	k2.Zero()
	if !isAllZero(k2.OPRFSeed) || !isAllZero(k2.PrivateKey) {
		t.Fatal("Zero")
	}
}

// TestMalformed feeds every decoder inputs of every wrong kind.
func TestMalformed(t *testing.T) {
	srv, _ := newTestServer(t)
	credID := CredentialID("alice", 1)
	pw := []byte("pw")
	record, _ := register(t, testClient, srv, credID, pw, TestKSF)
	_, req, _ := testClient.RegistrationStart(pw)
	resp, _ := srv.RegistrationResponse(credID, req)
	_, ke1, _ := testClient.LoginStart(pw)
	ke2, _, _ := srv.GenerateKE2(credID, record, ke1)

	variants := func(good []byte) map[string][]byte {
		return map[string][]byte{
			"nil":         nil,
			"short":       good[:len(good)-1],
			"long":        append(bytes.Clone(good), 0),
			"zeros":       make([]byte, len(good)),
			"ones":        bytes.Repeat([]byte{0xff}, len(good)),
			"double":      append(bytes.Clone(good), good...),
			"first bad":   append(bytes.Repeat([]byte{0xff}, 32), good[32:]...),
			"first zero":  append(make([]byte, 32), good[32:]...),
			"non-canonic": append(append([]byte{}, 0xed, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f), good[32:]...),
		}
	}

	for name, b := range variants(req) {
		if _, err := srv.RegistrationResponse(credID, b); !errors.Is(err, ErrMalformed) {
			t.Errorf("RegistrationResponse(%s): %v", name, err)
		}
	}
	for name, b := range variants(ke1) {
		if _, _, err := srv.GenerateKE2(credID, record, b); !errors.Is(err, ErrMalformed) {
			t.Errorf("GenerateKE2(ke1 %s): %v", name, err)
		}
		if _, _, err := srv.FakeKE2(credID, b); !errors.Is(err, ErrMalformed) {
			t.Errorf("FakeKE2(ke1 %s): %v", name, err)
		}
	}
	// KE1 whose key share (bytes 64..96) is the identity.
	badShare := append(bytes.Clone(ke1[:64]), make([]byte, 32)...)
	if _, _, err := srv.GenerateKE2(credID, record, badShare); !errors.Is(err, ErrMalformed) {
		t.Errorf("GenerateKE2(identity key share): %v", err)
	}
	for name, b := range variants(record) {
		if _, _, err := srv.GenerateKE2(credID, b, ke1); !errors.Is(err, ErrMalformed) {
			t.Errorf("GenerateKE2(record %s): %v", name, err)
		}
		if err := ValidateRecord(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("ValidateRecord(%s): %v", name, err)
		}
	}
	zeroEnvelope := append(bytes.Clone(record[:96]), make([]byte, 96)...)
	if err := ValidateRecord(zeroEnvelope); !errors.Is(err, ErrMalformed) {
		t.Errorf("ValidateRecord(zero envelope): %v", err)
	}
	zeroMasking := append(append(bytes.Clone(record[:32]), make([]byte, 64)...), record[96:]...)
	if err := ValidateRecord(zeroMasking); !errors.Is(err, ErrMalformed) {
		t.Errorf("ValidateRecord(zero masking key): %v", err)
	}
	if _, _, err := srv.GenerateKE2(nil, record, ke1); !errors.Is(err, ErrCredentialID) {
		t.Errorf("GenerateKE2 without credential id: %v", err)
	}
	if _, err := srv.RegistrationResponse(nil, req); !errors.Is(err, ErrCredentialID) {
		t.Errorf("RegistrationResponse without credential id: %v", err)
	}

	for name, b := range variants(resp) {
		st, _, _ := testClient.RegistrationStart(pw)
		if _, _, err := testClient.RegistrationFinish(st, pw, b, TestKSF); !errors.Is(err, ErrMalformed) {
			t.Errorf("RegistrationFinish(%s): %v", name, err)
		}
	}
	// A response whose server public key (bytes 32..64) is the identity.
	st, _, _ := testClient.RegistrationStart(pw)
	if _, _, err := testClient.RegistrationFinish(st, pw, append(bytes.Clone(resp[:32]), make([]byte, 32)...), TestKSF); !errors.Is(err, ErrMalformed) {
		t.Errorf("RegistrationFinish(identity server key): %v", err)
	}

	ke2Variants := variants(ke2)
	for _, r := range []struct {
		name     string
		from, to int
	}{
		{"zero masking nonce", 32, 64},
		{"zero masked response", 64, 192},
		{"zero server nonce", 192, 224},
		{"zero server key share", 224, 256},
		{"zero server MAC", 256, 320},
	} {
		b := bytes.Clone(ke2)
		clear(b[r.from:r.to])
		ke2Variants[r.name] = b
	}
	for name, b := range ke2Variants {
		ls, _, _ := testClient.LoginStart(pw)
		_, _, _, err := testClient.LoginFinish(ls, pw, b, TestKSF)
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("LoginFinish(%s): %v", name, err)
		}
	}
	// A KE2 whose bytes are altered but still decode is a wrong password,
	// whatever the byte: the client cannot tell tampering from a wrong
	// password, and must not accept either.
	for i := 0; i < KE2Size; i += 5 {
		ls, ke1, _ := testClient.LoginStart(pw)
		b, _, _ := srv.GenerateKE2(credID, record, ke1)
		b[i] ^= 0x01
		_, _, _, err := testClient.LoginFinish(ls, pw, b, TestKSF)
		if !errors.Is(err, ErrWrongPassword) && !errors.Is(err, ErrMalformed) {
			t.Errorf("LoginFinish(KE2 with byte %d flipped): %v", i, err)
		}
	}
}

// TestErrorsHoldNoSecrets checks error strings never echo inputs.
func TestErrorsHoldNoSecrets(t *testing.T) {
	srv, _ := newTestServer(t)
	pw := []byte("hunter2-secret-password")
	credID := CredentialID("alice", 1)
	record, _ := register(t, testClient, srv, credID, pw, TestKSF)
	st, _, _ := testClient.LoginStart(pw)
	_, _, _, err1 := testClient.LoginFinish(st, []byte("wrong-secret-password"), make([]byte, KE2Size), TestKSF)
	_, _, err2 := srv.GenerateKE2(credID, record, []byte("hunter2-secret-password"))
	_, err3 := ParseKSF("hunter2-secret-password", 1, 1, 1)
	for _, err := range []error{err1, err2, err3} {
		if err == nil {
			t.Fatal("no error")
		}
		if strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "secret-password") {
			t.Errorf("error leaks input: %q", err)
		}
	}
}

// TestConcurrentServer runs logins, fake logins and registrations on one
// Server from several goroutines (run with -race).
func TestConcurrentServer(t *testing.T) {
	srv, _ := newTestServer(t)
	pw := []byte("pw")
	record, exp := register(t, testClient, srv, CredentialID("alice", 1), pw, TestKSF)
	done := make(chan error, 8)
	for g := range 8 {
		go func() {
			for range 5 {
				st, ke1, _ := testClient.LoginStart(pw)
				var ke2, mac []byte
				var err error
				if g%2 == 0 {
					ke2, mac, err = srv.GenerateKE2(CredentialID("alice", 1), record, ke1)
				} else {
					ke2, mac, err = srv.FakeKE2(CredentialID("nobody", 0), ke1)
				}
				if err != nil {
					done <- err
					return
				}
				ke3, e, _, err := testClient.LoginFinish(st, pw, ke2, TestKSF)
				if g%2 == 0 && (err != nil || !VerifyKE3(ke3, mac) || !bytes.Equal(e, exp)) {
					done <- errors.New("real login failed")
					return
				}
				if g%2 == 1 && !errors.Is(err, ErrWrongPassword) {
					done <- errors.New("fake login did not fail as a wrong password")
					return
				}
				if _, err := srv.RegistrationResponse(CredentialID("bob", uint64(g)), ke1[:32]); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
	}
	for range 8 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}
