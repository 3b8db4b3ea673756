package pake

import (
	"fmt"
	"testing"

	"golang.org/x/crypto/argon2"
)

// BenchmarkServerLogin is the vault's CPU per login: GenerateKE2 and
// VerifyKE3 (the record and KE1 are decoded inside, as in production).
func BenchmarkServerLogin(b *testing.B) {
	srv, _ := newTestServer(b)
	credID := CredentialID("alice", 1)
	record, _ := register(b, testClient, srv, credID, []byte("pw"), TestKSF)
	_, ke1, _ := testClient.LoginStart([]byte("pw"))
	ke3 := make([]byte, KE3Size)
	b.ReportAllocs()
	for b.Loop() {
		_, mac, err := srv.GenerateKE2(credID, record, ke1)
		if err != nil {
			b.Fatal(err)
		}
		VerifyKE3(ke3, mac)
	}
}

// BenchmarkServerFakeKE2 is the vault's CPU per login for an unknown account.
func BenchmarkServerFakeKE2(b *testing.B) {
	srv, _ := newTestServer(b)
	credID := CredentialID("nobody", 0)
	_, ke1, _ := testClient.LoginStart([]byte("pw"))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := srv.FakeKE2(credID, ke1); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkServerRegistrationResponse is the vault's CPU per registration.
func BenchmarkServerRegistrationResponse(b *testing.B) {
	srv, _ := newTestServer(b)
	credID := CredentialID("alice", 1)
	_, req, _ := testClient.RegistrationStart([]byte("pw"))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := srv.RegistrationResponse(credID, req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkServerValidateRecord is the vault's check of an uploaded record.
func BenchmarkServerValidateRecord(b *testing.B) {
	srv, _ := newTestServer(b)
	record, _ := register(b, testClient, srv, CredentialID("alice", 1), []byte("pw"), TestKSF)
	b.ReportAllocs()
	for b.Loop() {
		if err := ValidateRecord(record); err != nil {
			b.Fatal(err)
		}
	}
}

var clientProfiles = []struct {
	name string
	ksf  KSF
}{
	{"TestKSF", TestKSF},
	{"DefaultKSF", DefaultKSF},
}

// BenchmarkClientLogin is the device's CPU per login (LoginStart and
// LoginFinish; the server's part is excluded).
func BenchmarkClientLogin(b *testing.B) {
	srv, _ := newTestServer(b)
	credID := CredentialID("alice", 1)
	pw := []byte("correct horse battery staple")
	for _, p := range clientProfiles {
		b.Run(p.name, func(b *testing.B) {
			record, _ := register(b, testClient, srv, credID, pw, p.ksf)
			b.ReportAllocs()
			for b.Loop() {
				st, ke1, err := testClient.LoginStart(pw)
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				ke2, _, err := srv.GenerateKE2(credID, record, ke1)
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				if _, _, _, err := testClient.LoginFinish(st, pw, ke2, p.ksf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkClientRegistration is the device's CPU per registration.
func BenchmarkClientRegistration(b *testing.B) {
	srv, _ := newTestServer(b)
	credID := CredentialID("alice", 1)
	pw := []byte("correct horse battery staple")
	for _, p := range clientProfiles {
		b.Run(p.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				st, req, err := testClient.RegistrationStart(pw)
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				resp, err := srv.RegistrationResponse(credID, req)
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				if _, _, err := testClient.RegistrationFinish(st, pw, resp, p.ksf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// ksfProfiles are the Argon2id profiles measured for pake/README.md.
var ksfProfiles = []KSF{
	{Time: 1, MemoryKiB: 19 * 1024, Threads: 1},   // PROTOCOL.md floor
	{Time: 2, MemoryKiB: 19 * 1024, Threads: 1},   // OWASP minimum
	{Time: 3, MemoryKiB: 64 * 1024, Threads: 4},   // bytemare/opaque default
	{Time: 2, MemoryKiB: 128 * 1024, Threads: 4},  //
	{Time: 1, MemoryKiB: 256 * 1024, Threads: 4},  //
	{Time: 2, MemoryKiB: 256 * 1024, Threads: 4},  // DefaultKSF
	{Time: 3, MemoryKiB: 256 * 1024, Threads: 4},  //
	{Time: 3, MemoryKiB: 256 * 1024, Threads: 1},  //
	{Time: 1, MemoryKiB: 2048 * 1024, Threads: 4}, // RFC 9807 §7 recommendation
}

// BenchmarkKSF times the Argon2id computation alone, as OPAQUE runs it
// (64-byte input, 16 zero bytes of salt, 64-byte output), for each profile.
func BenchmarkKSF(b *testing.B) {
	in := make([]byte, 64)
	salt := make([]byte, ksfSaltSize)
	for _, k := range ksfProfiles {
		name := fmt.Sprintf("t=%d/m=%dMiB/p=%d", k.Time, k.MemoryKiB/1024, k.Threads)
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				argon2.IDKey(in, salt, k.Time, k.MemoryKiB, uint8(k.Threads), ksfOutputSize)
			}
		})
	}
}
