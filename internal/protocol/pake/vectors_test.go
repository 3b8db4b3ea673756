package pake

import (
	"bytes"
	"crypto"
	"encoding/hex"
	"encoding/json"
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
