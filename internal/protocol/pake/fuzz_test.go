package pake

import (
	"bytes"
	"encoding/hex"
	"errors"
	"testing"

	"github.com/bytemare/opaque"
)

// fuzzFixture is a server, a record and client inputs, all deterministic:
// fuzz workers are separate processes that rebuild the fixture, and the seed
// corpus made by one must be valid in the others.
type fuzzFixture struct {
	srv    *Server
	credID []byte
	pw     []byte
	record []byte
	req    []byte
	resp   []byte
	ke1    []byte
	ke2    []byte
	seed   []byte
	nonce  []byte
}

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

func newFuzzFixture(t testing.TB) *fuzzFixture {
	// The server keys of RFC 9807 Appendix C.1.1.
	srv, err := NewServer(&ServerKeys{
		OPRFSeed:   mustHex("f433d0227b0b9dd54f7c4422b600e764e47fb503f1f9a0f0a47c6606b054a7fdc65347f1a08f277e22358bbabe26f823fca82c7848e9a75661f4ec5d5c1989ef"),
		PrivateKey: mustHex("47451a85372f8b3537e249d7b54188091fb18edde78094b43e2ba42b5eb89f0d"),
		PublicKey:  mustHex("b2fe7af9f48cc502d016729d2fe25cdd433f2c4bc904660b2a382c9b79df1a78"),
	})
	if err != nil {
		t.Fatal(err)
	}
	f := &fuzzFixture{
		srv:    srv,
		credID: CredentialID("alice", 1),
		pw:     []byte("pw"),
		seed:   bytes.Repeat([]byte{7}, 32),
		nonce:  bytes.Repeat([]byte{9}, 32),
	}
	st, req, err := f.registrationStart()
	if err != nil {
		t.Fatal(err)
	}
	f.req = req
	if f.resp, err = srv.RegistrationResponse(f.credID, req); err != nil {
		t.Fatal(err)
	}
	if f.record, _, err = testClient.registrationFinish(st, f.pw, f.resp, TestKSF, bytes.Repeat([]byte{5}, 32)); err != nil {
		t.Fatal(err)
	}
	_, f.ke1, err = f.loginStart()
	if err != nil {
		t.Fatal(err)
	}
	f.ke2, _, err = srv.generateKE2(f.credID, f.record, f.ke1, &opaque.ServerOptions{
		AKE:          &opaque.AKEOptions{SecretKeyShareSeed: bytes.Repeat([]byte{11}, 32), Nonce: bytes.Repeat([]byte{13}, 32)},
		MaskingNonce: bytes.Repeat([]byte{17}, 32),
	})
	if err != nil {
		t.Fatal(err)
	}
	// The seeds must include messages that succeed.
	ls, _, _ := f.loginStart()
	if _, _, _, err := testClient.LoginFinish(ls, f.pw, f.ke2, TestKSF); err != nil {
		t.Fatalf("fixture login: %v", err)
	}
	rs, _, _ := f.registrationStart()
	if _, _, err := testClient.RegistrationFinish(rs, f.pw, f.resp, TestKSF); err != nil {
		t.Fatalf("fixture registration: %v", err)
	}
	return f
}

func (f *fuzzFixture) blind() []byte { return bytes.Repeat([]byte{3}, 32) }

func (f *fuzzFixture) registrationStart() (*RegistrationState, []byte, error) {
	b := coffer.group().NewScalar()
	if err := b.Decode(f.blind()); err != nil {
		panic(err)
	}
	return testClient.registrationStart(f.pw, b)
}

func (f *fuzzFixture) loginStart() (*LoginState, []byte, error) {
	b := coffer.group().NewScalar()
	if err := b.Decode(f.blind()); err != nil {
		panic(err)
	}
	return testClient.loginStart(f.pw, b, f.seed, f.nonce)
}

// checkErr fails unless err is nil or one of the documented sentinels.
func checkErr(t *testing.T, err error, allowed ...error) {
	t.Helper()
	if err == nil {
		return
	}
	for _, a := range allowed {
		if errors.Is(err, a) {
			return
		}
	}
	t.Fatalf("undocumented error: %v", err)
}

func FuzzGenerateKE2(f *testing.F) {
	fx := newFuzzFixture(f)
	f.Add(fx.record, fx.ke1)
	f.Add(fx.record, fx.ke1[:95])
	f.Add(fx.record[:191], fx.ke1)
	f.Add(make([]byte, RecordSize), make([]byte, KE1Size))
	f.Add(bytes.Repeat([]byte{0xff}, RecordSize), bytes.Repeat([]byte{0xff}, KE1Size))
	f.Fuzz(func(t *testing.T, record, ke1 []byte) {
		ke2, mac, err := fx.srv.GenerateKE2(fx.credID, record, ke1)
		checkErr(t, err, ErrMalformed)
		if err == nil && (len(ke2) != KE2Size || len(mac) != KE3Size) {
			t.Fatalf("KE2 %d bytes, MAC %d bytes", len(ke2), len(mac))
		}
		ke2, mac, err = fx.srv.FakeKE2(fx.credID, ke1)
		checkErr(t, err, ErrMalformed)
		if err == nil && (len(ke2) != KE2Size || len(mac) != KE3Size) {
			t.Fatalf("fake KE2 %d bytes, MAC %d bytes", len(ke2), len(mac))
		}
		if err := ValidateRecord(record); err == nil && len(record) != RecordSize {
			t.Fatal("ValidateRecord accepts a record of the wrong size")
		} else {
			checkErr(t, err, ErrMalformed)
		}
	})
}

func FuzzRegistrationResponse(f *testing.F) {
	fx := newFuzzFixture(f)
	f.Add(fx.credID, fx.req)
	f.Add([]byte{}, fx.req)
	f.Add(fx.credID, make([]byte, 32))
	f.Add(fx.credID, bytes.Repeat([]byte{0xff}, 32))
	f.Fuzz(func(t *testing.T, credID, req []byte) {
		resp, err := fx.srv.RegistrationResponse(credID, req)
		checkErr(t, err, ErrMalformed, ErrCredentialID)
		if err == nil && len(resp) != RegistrationResponseSize {
			t.Fatalf("response %d bytes", len(resp))
		}
	})
}

func FuzzRegistrationFinish(f *testing.F) {
	fx := newFuzzFixture(f)
	f.Add(fx.resp)
	f.Add(fx.resp[:63])
	f.Add(make([]byte, 64))
	f.Fuzz(func(t *testing.T, resp []byte) {
		st, _, err := fx.registrationStart()
		if err != nil {
			t.Fatal(err)
		}
		record, exportKey, err := testClient.RegistrationFinish(st, fx.pw, resp, TestKSF)
		checkErr(t, err, ErrMalformed)
		if err == nil {
			if len(record) != RecordSize || len(exportKey) != ExportKeySize {
				t.Fatalf("record %d bytes, export key %d bytes", len(record), len(exportKey))
			}
			if err := ValidateRecord(record); err != nil {
				t.Fatalf("client made a record the server refuses: %v", err)
			}
		}
	})
}

func FuzzLoginFinish(f *testing.F) {
	fx := newFuzzFixture(f)
	f.Add(fx.ke2)
	f.Add(fx.ke2[:KE2Size-1])
	f.Add(make([]byte, KE2Size))
	bad := bytes.Clone(fx.ke2)
	bad[100] ^= 1
	f.Add(bad)
	f.Fuzz(func(t *testing.T, ke2 []byte) {
		st, _, err := fx.loginStart()
		if err != nil {
			t.Fatal(err)
		}
		ke3, exportKey, sessionKey, err := testClient.LoginFinish(st, fx.pw, ke2, TestKSF)
		checkErr(t, err, ErrMalformed, ErrWrongPassword)
		if err == nil {
			// The server's MAC covers the whole KE2: only the genuine one
			// completes the login.
			if !bytes.Equal(ke2, fx.ke2) {
				t.Fatal("a KE2 other than the server's completed the login")
			}
			if len(ke3) != KE3Size || len(exportKey) != ExportKeySize || len(sessionKey) != SessionKeySize {
				t.Fatal("output sizes")
			}
		}
	})
}

func FuzzKSF(f *testing.F) {
	f.Add(KSFAlgorithm, uint32(2), uint32(256*1024), uint32(4))
	f.Add("", uint32(0), uint32(0), uint32(0))
	f.Add(KSFAlgorithm, uint32(1), uint32(7), uint32(1))
	f.Fuzz(func(t *testing.T, alg string, tm, m, p uint32) {
		k, err := ParseKSF(alg, tm, m, p)
		checkErr(t, err, ErrKSF)
		if err != nil {
			return
		}
		strict, weak := k.Validate(), k.ValidateAllowWeak()
		checkErr(t, strict, ErrKSF)
		checkErr(t, weak, ErrKSF)
		if strict == nil && weak != nil {
			t.Fatal("Validate accepts what ValidateAllowWeak refuses")
		}
		if weak == nil && (tm < 1 || tm > MaxKSFTime || m > MaxKSFMemoryKiB || p < 1 || p > MaxKSFThreads || uint64(m) < 8*uint64(p)) {
			t.Fatalf("%v accepted", k)
		}
		if strict == nil && m < MinKSFMemoryKiB {
			t.Fatalf("%v accepted below the floor", k)
		}
	})
}
