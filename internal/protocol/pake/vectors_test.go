package pake

import (
	"bytes"
	"crypto"
	"crypto/hkdf"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"testing"

	"github.com/bytemare/opaque"
)

// hexBytes is a byte slice written in JSON as a hex string.
type hexBytes []byte

func (h *hexBytes) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	d, err := hex.DecodeString(s)
	*h = d
	return err
}

// rfcVector is one test vector of RFC 9807 Appendix C, in the JSON layout of
// testdata/rfc9807_ristretto255.json.
type rfcVector struct {
	Config struct {
		Context hexBytes `json:"Context"`
		Fake    string   `json:"Fake"`
		Group   string   `json:"Group"`
		KSF     string   `json:"KSF"`
		OPRF    string   `json:"OPRF"`
		Hash    string   `json:"Hash"`
		KDF     string   `json:"KDF"`
		MAC     string   `json:"MAC"`
	} `json:"config"`
	Inputs struct {
		BlindLogin           hexBytes `json:"blind_login"`
		BlindRegistration    hexBytes `json:"blind_registration"`
		ClientIdentity       hexBytes `json:"client_identity"`
		ClientKeyshareSeed   hexBytes `json:"client_keyshare_seed"`
		ClientNonce          hexBytes `json:"client_nonce"`
		CredentialIdentifier hexBytes `json:"credential_identifier"`
		EnvelopeNonce        hexBytes `json:"envelope_nonce"`
		MaskingNonce         hexBytes `json:"masking_nonce"`
		OPRFSeed             hexBytes `json:"oprf_seed"`
		Password             hexBytes `json:"password"`
		ServerIdentity       hexBytes `json:"server_identity"`
		ServerKeyshareSeed   hexBytes `json:"server_keyshare_seed"`
		ServerNonce          hexBytes `json:"server_nonce"`
		ServerPrivateKey     hexBytes `json:"server_private_key"`
		ServerPublicKey      hexBytes `json:"server_public_key"`
		ClientPublicKey      hexBytes `json:"client_public_key"` // fake vectors
		MaskingKey           hexBytes `json:"masking_key"`       // fake vectors
		KE1                  hexBytes `json:"KE1"`               // fake vectors
	} `json:"inputs"`
	Outputs struct {
		KE1                  hexBytes `json:"KE1"`
		KE2                  hexBytes `json:"KE2"`
		KE3                  hexBytes `json:"KE3"`
		ExportKey            hexBytes `json:"export_key"`
		RegistrationRequest  hexBytes `json:"registration_request"`
		RegistrationResponse hexBytes `json:"registration_response"`
		RegistrationUpload   hexBytes `json:"registration_upload"`
		SessionKey           hexBytes `json:"session_key"`
	} `json:"outputs"`
}

// TestRFC9807Vectors runs the RFC's ristretto255 vectors through this
// package's own client and server code (the same functions as production,
// with the randomness injected), configured exactly as the vectors say: the
// RFC's context, the identity KSF, and explicit identities where given.
func TestRFC9807Vectors(t *testing.T) {
	b, err := os.ReadFile("testdata/rfc9807_ristretto255.json")
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Vectors []rfcVector `json:"vectors"`
	}
	if err := json.Unmarshal(b, &file); err != nil {
		t.Fatal(err)
	}
	if len(file.Vectors) != 3 {
		t.Fatalf("%d vectors, want 3", len(file.Vectors))
	}
	for i, v := range file.Vectors {
		c := v.Config
		if c.Group != "ristretto255" || c.OPRF != "ristretto255-SHA512" || c.KSF != "Identity" ||
			c.Hash != "SHA512" || c.KDF != "HKDF-SHA512" || c.MAC != "HMAC-SHA512" {
			t.Fatalf("vector %d: unexpected configuration %+v", i, c)
		}
		name := "real"
		if c.Fake == "True" {
			name = "fake"
		}
		if len(v.Inputs.ClientIdentity) != 0 {
			name += "-identities"
		}
		t.Run(name, func(t *testing.T) {
			s := newSuite(&opaque.Configuration{
				OPRF:    opaque.RistrettoSha512,
				AKE:     opaque.RistrettoSha512,
				KSF:     0, // identity
				KDF:     crypto.SHA512,
				MAC:     crypto.SHA512,
				Hash:    crypto.SHA512,
				Context: v.Config.Context,
			}, false, nilIfEmpty(v.Inputs.ClientIdentity), nilIfEmpty(v.Inputs.ServerIdentity))
			if c.Fake == "True" {
				testFakeVector(t, s, &v)
			} else {
				testRealVector(t, s, &v)
			}
		})
	}
}

func nilIfEmpty(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return b
}

func vectorServer(t *testing.T, s *suite, v *rfcVector) *Server {
	t.Helper()
	srv, err := newServer(s, &ServerKeys{
		OPRFSeed:   v.Inputs.OPRFSeed,
		PrivateKey: v.Inputs.ServerPrivateKey,
		PublicKey:  v.Inputs.ServerPublicKey,
	})
	if err != nil {
		t.Fatal(err)
	}
	return srv
}

func vectorServerOptions(v *rfcVector) *opaque.ServerOptions {
	return &opaque.ServerOptions{
		AKE: &opaque.AKEOptions{
			SecretKeyShareSeed: v.Inputs.ServerKeyshareSeed,
			Nonce:              v.Inputs.ServerNonce,
		},
		MaskingNonce: v.Inputs.MaskingNonce,
	}
}

func testRealVector(t *testing.T, s *suite, v *rfcVector) {
	in, out := &v.Inputs, &v.Outputs
	client := Client{suite: s}
	srv := vectorServer(t, s, v)
	check := func(what string, got, want []byte) {
		t.Helper()
		if !bytes.Equal(got, want) {
			t.Fatalf("%s:\n got %x\nwant %x", what, got, want)
		}
	}

	// Registration.
	blind, err := opaque.DeserializeScalar(s.group(), in.BlindRegistration)
	if err != nil {
		t.Fatal(err)
	}
	rst, req, err := client.registrationStart(in.Password, blind)
	if err != nil {
		t.Fatal(err)
	}
	check("registration request", req, out.RegistrationRequest)
	resp, err := srv.RegistrationResponse(in.CredentialIdentifier, req)
	if err != nil {
		t.Fatal(err)
	}
	check("registration response", resp, out.RegistrationResponse)
	record, exportKey, err := client.registrationFinish(rst, in.Password, resp, KSF{}, in.EnvelopeNonce)
	if err != nil {
		t.Fatal(err)
	}
	check("registration record", record, out.RegistrationUpload)
	check("export key (registration)", exportKey, out.ExportKey)

	// Login.
	blind, err = opaque.DeserializeScalar(s.group(), in.BlindLogin)
	if err != nil {
		t.Fatal(err)
	}
	lst, ke1, err := client.loginStart(in.Password, blind, in.ClientKeyshareSeed, in.ClientNonce)
	if err != nil {
		t.Fatal(err)
	}
	check("KE1", ke1, out.KE1)
	ke2, mac, err := srv.generateKE2(in.CredentialIdentifier, record, ke1, vectorServerOptions(v))
	if err != nil {
		t.Fatal(err)
	}
	check("KE2", ke2, out.KE2)
	check("expected client MAC", mac, out.KE3)
	ke3, exportKey, sessionKey, err := client.LoginFinish(lst, in.Password, ke2, KSF{})
	if err != nil {
		t.Fatal(err)
	}
	check("KE3", ke3, out.KE3)
	check("export key (login)", exportKey, out.ExportKey)
	check("session key", sessionKey, out.SessionKey)
	if !VerifyKE3(ke3, mac) {
		t.Fatal("VerifyKE3 rejects the vector's KE3")
	}
}

func testFakeVector(t *testing.T, s *suite, v *rfcVector) {
	in := &v.Inputs
	srv := vectorServer(t, s, v)
	// The fake record of RFC 9807 §6.3.2.2: the vector's public key and
	// masking key, and an all-zero envelope (Nn + Nm bytes).
	record := append(append(bytes.Clone(in.ClientPublicKey), in.MaskingKey...), make([]byte, 32+64)...)
	ke2, _, err := srv.generateKE2(in.CredentialIdentifier, record, in.KE1, vectorServerOptions(v))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ke2, v.Outputs.KE2) {
		t.Fatalf("fake KE2:\n got %x\nwant %x", ke2, v.Outputs.KE2)
	}
}

// TestRFC9807VectorsFromEvaluation runs the same vectors through the
// protocol-v2 server path: the evaluated element is computed here
// independently of bytemare/opaque, from the vector's OPRF seed as RFC 9807
// §6.3.2.2 says (seed = Expand(oprf_seed, credential_identifier ‖ "OprfKey",
// Nok), (oprf_key, _) = DeriveKeyPair(seed, "OPAQUE-DeriveKeyPair"),
// Z = oprf_key · blinded_element), and handed to
// RegistrationResponseFromEvaluation and ke2FromEvaluation with the vector's
// nonces and key-share seed. The registration response, KE2, the expected
// client MAC (= KE3) and the session key must equal the RFC's bytes.
func TestRFC9807VectorsFromEvaluation(t *testing.T) {
	b, err := os.ReadFile("testdata/rfc9807_ristretto255.json")
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Vectors []rfcVector `json:"vectors"`
	}
	if err := json.Unmarshal(b, &file); err != nil {
		t.Fatal(err)
	}
	ran := 0
	for i, v := range file.Vectors {
		s := newSuite(&opaque.Configuration{
			OPRF: opaque.RistrettoSha512, AKE: opaque.RistrettoSha512, KSF: 0,
			KDF: crypto.SHA512, MAC: crypto.SHA512, Hash: crypto.SHA512,
			Context: v.Config.Context,
		}, false, nilIfEmpty(v.Inputs.ClientIdentity), nilIfEmpty(v.Inputs.ServerIdentity))
		in, out := &v.Inputs, &v.Outputs
		// A v2 server: no OPRF seed at all.
		srv, err := newServer(s, &ServerKeys{PrivateKey: in.ServerPrivateKey, PublicKey: in.ServerPublicKey})
		if err != nil {
			t.Fatal(err)
		}
		g := s.group()
		seed, err := hkdf.Expand(sha512.New, in.OPRFSeed, string(in.CredentialIdentifier)+"OprfKey", 32)
		if err != nil {
			t.Fatal(err)
		}
		oprfKey, _, err := deriveKeyPair(g, seed, "OPAQUE-DeriveKeyPair")
		if err != nil {
			t.Fatal(err)
		}
		evaluate := func(blinded []byte) []byte {
			e, err := decodeElement(g, blinded)
			if err != nil {
				t.Fatal(err)
			}
			return e.Multiply(oprfKey).Encode()
		}
		rnd := &ke2Randomness{maskingNonce: in.MaskingNonce, keyshareSeed: in.ServerKeyshareSeed, serverNonce: in.ServerNonce}
		if v.Config.Fake == "True" {
			record := append(append(bytes.Clone(in.ClientPublicKey), in.MaskingKey...), make([]byte, 32+64)...)
			ke2, _, _, err := srv.ke2FromEvaluation(record, in.KE1, evaluate(in.KE1[:32]), rnd)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(ke2, out.KE2) {
				t.Fatalf("vector %d (fake): KE2\n got %x\nwant %x", i, ke2, out.KE2)
			}
			ran++
			continue
		}
		blindedReg, err := RegistrationBlindedElement(out.RegistrationRequest)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := srv.RegistrationResponseFromEvaluation(evaluate(blindedReg))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(resp, out.RegistrationResponse) {
			t.Fatalf("vector %d: registration response\n got %x\nwant %x", i, resp, out.RegistrationResponse)
		}
		blinded, err := BlindedElement(out.KE1)
		if err != nil {
			t.Fatal(err)
		}
		ke2, mac, sessionKey, err := srv.ke2FromEvaluation(out.RegistrationUpload, out.KE1, evaluate(blinded), rnd)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(ke2, out.KE2) {
			t.Fatalf("vector %d: KE2\n got %x\nwant %x", i, ke2, out.KE2)
		}
		if !bytes.Equal(mac, out.KE3) {
			t.Fatalf("vector %d: expected client MAC\n got %x\nwant %x", i, mac, out.KE3)
		}
		if !bytes.Equal(sessionKey, out.SessionKey) {
			t.Fatalf("vector %d: session key\n got %x\nwant %x", i, sessionKey, out.SessionKey)
		}
		// The v1 methods refuse on a seedless server.
		if _, err := srv.RegistrationResponse(in.CredentialIdentifier, out.RegistrationRequest); !errors.Is(err, ErrNoOPRFSeed) {
			t.Fatalf("RegistrationResponse on a seedless server: %v, want ErrNoOPRFSeed", err)
		}
		ran++
	}
	if ran != 3 {
		t.Fatalf("%d vectors ran, want 3", ran)
	}
}
