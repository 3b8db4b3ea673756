package pake

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/cofferhq/coffer/internal/protocol/toprf"
)

// The interoperability test with the unmodified npm package
// @serenity-kit/opaque 1.1.0 (opaque-ke 4 compiled to WebAssembly; its
// OPAQUE context is hard-coded empty). testdata/serenity holds package.json,
// the package-lock.json that pins the tarball's integrity hash, and
// driver.mjs; the test copies them to a temporary directory, runs `npm ci`
// there, and drives the serenity client through driver.mjs over stdin and
// stdout (one JSON object per line) against this package's server code,
// with the OPRF evaluated by a toprf fleet (2 of 3) for the v2 path.
//
// Without node or npm, or when the package cannot be installed (offline),
// the test is skipped with the reason — unless CI=true, where it fails.

type serenity struct {
	t   *testing.T
	in  *json.Encoder
	out *bufio.Scanner
}

func startSerenity(t *testing.T) *serenity {
	t.Helper()
	ci := os.Getenv("CI") == "true"
	missing := func(msg string) {
		t.Helper()
		if ci {
			t.Fatalf("%s (required when CI=true)", msg)
		}
		t.Skipf("%s; skipping the @serenity-kit/opaque interop test (it is required when CI=true)", msg)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		missing("node not found on PATH (install Node 20)")
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		missing("npm not found on PATH")
	}
	dir := t.TempDir()
	for _, f := range []string{"package.json", "package-lock.json", "driver.mjs"} {
		b, err := os.ReadFile(filepath.Join("testdata", "serenity", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ictx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	install := exec.CommandContext(ictx, npm, "ci", "--prefix", dir, "--no-audit", "--no-fund", "--ignore-scripts")
	install.Dir = dir
	if out, err := install.CombinedOutput(); err != nil {
		missing("npm ci of @serenity-kit/opaque@1.1.0 failed: " + err.Error() + ": " + string(bytes.TrimSpace(out)))
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "@serenity-kit", "opaque", "package.json")); err != nil {
		missing("@serenity-kit/opaque is not installed after npm ci")
	}

	ctx, cancelRun := context.WithTimeout(context.Background(), 3*time.Minute)
	cmd := exec.CommandContext(ctx, node, "driver.mjs")
	cmd.Dir = dir
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		if err := cmd.Wait(); err != nil && ctx.Err() == nil {
			t.Errorf("node driver: %v: %s", err, stderr.String())
		}
		cancelRun()
	})
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	return &serenity{t: t, in: json.NewEncoder(stdin), out: sc}
}

type serenityReply struct {
	State, Message, ExportKey, SessionKey, ServerStaticPublicKey string
	OK                                                           bool
	Error                                                        string
}

func (s *serenity) call(req map[string]any) serenityReply {
	s.t.Helper()
	if err := s.in.Encode(req); err != nil {
		s.t.Fatal(err)
	}
	if !s.out.Scan() {
		s.t.Fatalf("node driver gave no answer to %v: %v", req["op"], s.out.Err())
	}
	var r serenityReply
	if err := json.Unmarshal(s.out.Bytes(), &r); err != nil {
		s.t.Fatal(err)
	}
	if r.Error != "" {
		s.t.Fatalf("serenity %v: %s", req["op"], r.Error)
	}
	return r
}

var b64 = base64.RawURLEncoding

func unb64(t *testing.T, s string) []byte {
	t.Helper()
	b, err := b64.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// serenityKSF is the keyStretching option for a Coffer profile; nil means
// serenity-kit's default ("memory-constrained" = MemoryConstrainedKSF).
func serenityKSF(k *KSF) any {
	if k == nil {
		return nil
	}
	return map[string]any{"argon2id-custom": map[string]any{"iterations": k.Time, "memory": k.MemoryKiB, "parallelism": k.Threads}}
}

// thresholdFleet is a 2-of-3 toprf fleet evaluating for one account.
type thresholdFleet struct {
	m      toprf.Membership
	seeds  []*toprf.ReplicaSeeds
	cred   []byte
	public toprf.PublicShares
}

func newThresholdFleet(t *testing.T, cred []byte) *thresholdFleet {
	m, err := toprf.NewMembership([]uint16{1, 2, 3}, toprf.DefaultThreshold(3))
	if err != nil {
		t.Fatal(err)
	}
	seeds, err := toprf.Deal(m, rand.NewChaCha8([32]byte{7}))
	if err != nil {
		t.Fatal(err)
	}
	f := &thresholdFleet{m: m, seeds: seeds, cred: cred}
	given := toprf.PublicShares{}
	for _, r := range seeds {
		s, err := r.Share(cred, nil)
		if err != nil {
			t.Fatal(err)
		}
		given[r.Index] = s.Public()
		s.Zero()
	}
	if f.public, _, err = toprf.CheckPublicShares(m, given); err != nil {
		t.Fatal(err)
	}
	return f
}

// evaluate gets partials from replicas 1 and 3 (2 is down) and combines.
func (f *thresholdFleet) evaluate(t *testing.T, blinded []byte) []byte {
	t.Helper()
	var ps []toprf.Partial
	for _, r := range []*toprf.ReplicaSeeds{f.seeds[0], f.seeds[2]} {
		s, err := r.Share(f.cred, nil)
		if err != nil {
			t.Fatal(err)
		}
		p, err := s.Evaluate(blinded)
		s.Zero()
		if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	z, faults, err := toprf.Combine(f.m, f.public, blinded, ps)
	if err != nil || len(faults) != 0 {
		t.Fatalf("combine: %v %v", err, faults)
	}
	return z
}

// TestSerenityKitInterop: the unmodified @serenity-kit/opaque 1.1.0 client
// registers and logs in against this package's server code — through the
// protocol-v2 path (RegistrationResponseFromEvaluation and
// KE2FromEvaluation around a 2-of-3 toprf combine) and through the v1 path
// (the OPRF seed) — with the empty context. Each leg checks the session
// keys agree and KE3 verifies, and cross-checks the export keys with
// Coffer's own client in both directions (which pins the KSF: Argon2id,
// 16 zero-byte salt, 64-byte output, same parameters). A wrong password
// fails on the serenity side. The last leg uses serenity-kit's default key
// stretching ("memory-constrained") and Coffer's MemoryConstrainedKSF.
func TestSerenityKitInterop(t *testing.T) {
	js := startSerenity(t)
	keys, err := GenerateServerKeys()
	if err != nil {
		t.Fatal(err)
	}
	v1, err := NewServer(keys)
	if err != nil {
		t.Fatal(err)
	}
	v2, err := NewServer(&ServerKeys{PrivateKey: keys.PrivateKey, PublicKey: keys.PublicKey})
	if err != nil {
		t.Fatal(err)
	}

	type path struct {
		name     string
		register func(cred, req []byte) []byte
		ke2      func(cred, record, ke1 []byte) (ke2, mac, sessionKey []byte)
	}
	fleets := map[string]*thresholdFleet{}
	fleetFor := func(cred []byte) *thresholdFleet {
		if f, ok := fleets[string(cred)]; ok {
			return f
		}
		f := newThresholdFleet(t, cred)
		fleets[string(cred)] = f
		return f
	}
	paths := []path{
		{"v2 threshold", func(cred, req []byte) []byte {
			b, err := RegistrationBlindedElement(req)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := v2.RegistrationResponseFromEvaluation(fleetFor(cred).evaluate(t, b))
			if err != nil {
				t.Fatal(err)
			}
			return resp
		}, func(cred, record, ke1 []byte) ([]byte, []byte, []byte) {
			b, err := BlindedElement(ke1)
			if err != nil {
				t.Fatal(err)
			}
			ke2, mac, sk, err := v2.ke2FromEvaluation(record, ke1, fleetFor(cred).evaluate(t, b), freshKE2Randomness())
			if err != nil {
				t.Fatal(err)
			}
			return ke2, mac, sk
		}},
		{"v1 seed", func(cred, req []byte) []byte {
			resp, err := v1.RegistrationResponse(cred, req)
			if err != nil {
				t.Fatal(err)
			}
			return resp
		}, func(cred, record, ke1 []byte) ([]byte, []byte, []byte) {
			ke2, mac, err := v1.GenerateKE2(cred, record, ke1)
			if err != nil {
				t.Fatal(err)
			}
			return ke2, mac, nil
		}},
	}

	jsRegister := func(p path, cred, pw []byte, k *KSF) (record, export []byte) {
		r := js.call(map[string]any{"op": "regStart", "password": string(pw)})
		resp := p.register(cred, unb64(t, r.Message))
		f := js.call(map[string]any{"op": "regFinish", "state": r.State, "message": b64.EncodeToString(resp), "password": string(pw), "keyStretching": serenityKSF(k)})
		if !bytes.Equal(unb64(t, f.ServerStaticPublicKey), v2.PublicKey()) {
			t.Fatal("serenity saw another server public key")
		}
		record = unb64(t, f.Message)
		if err := ValidateRecord(record); err != nil {
			t.Fatalf("serenity's record: %v", err)
		}
		return record, unb64(t, f.ExportKey)
	}
	jsLogin := func(p path, cred, record, pw []byte, k *KSF) (ok bool, export []byte) {
		r := js.call(map[string]any{"op": "loginStart", "password": string(pw)})
		ke2, mac, sk := p.ke2(cred, record, unb64(t, r.Message))
		f := js.call(map[string]any{"op": "loginFinish", "state": r.State, "message": b64.EncodeToString(ke2), "password": string(pw), "keyStretching": serenityKSF(k)})
		if !f.OK {
			return false, nil
		}
		if !VerifyKE3(unb64(t, f.Message), mac) {
			t.Fatalf("%s: serenity's KE3 does not verify", p.name)
		}
		if sk != nil && !bytes.Equal(unb64(t, f.SessionKey), sk) {
			t.Fatalf("%s: session keys differ", p.name)
		}
		return true, unb64(t, f.ExportKey)
	}
	goLogin := func(p path, cred, record, pw []byte, k KSF) (error, []byte) {
		c := Client{AllowWeakKSF: true}
		st, ke1, err := c.LoginStart(pw)
		if err != nil {
			t.Fatal(err)
		}
		ke2, mac, _ := p.ke2(cred, record, ke1)
		ke3, export, _, err := c.LoginFinish(st, pw, ke2, k)
		if err == nil && !VerifyKE3(ke3, mac) {
			t.Fatal("Go KE3 does not verify")
		}
		return err, export
	}

	test := TestKSF
	for _, p := range paths {
		t.Run(p.name, func(t *testing.T) {
			cred := CredentialID("serenity-"+p.name, 1)
			pw := []byte("correct horse battery staple")
			record, export := jsRegister(p, cred, pw, &test)
			if ok, e := jsLogin(p, cred, record, pw, &test); !ok || !bytes.Equal(e, export) {
				t.Fatalf("serenity login: ok=%v", ok)
			}
			if ok, _ := jsLogin(p, cred, record, []byte("wrong password"), &test); ok {
				t.Fatal("serenity logged in with a wrong password")
			}
			// Coffer's client logs in to serenity's record with the same export key.
			if err, e := goLogin(p, cred, record, pw, test); err != nil || !bytes.Equal(e, export) {
				t.Fatalf("Go login to serenity's record: %v (export equal %v)", err, bytes.Equal(e, export))
			}
			// Serenity logs in to a record Coffer's client registered.
			cred2 := CredentialID("go-"+p.name, 1)
			c := Client{AllowWeakKSF: true}
			st, req, err := c.RegistrationStart(pw)
			if err != nil {
				t.Fatal(err)
			}
			rec2, goExport, err := c.RegistrationFinish(st, pw, p.register(cred2, req), test)
			if err != nil {
				t.Fatal(err)
			}
			if ok, e := jsLogin(p, cred2, rec2, pw, &test); !ok || !bytes.Equal(e, goExport) {
				t.Fatalf("serenity login to Go's record: ok=%v", ok)
			}
		})
	}

	t.Run("default key stretching", func(t *testing.T) {
		p := paths[0]
		cred := CredentialID("serenity-default-ksf", 1)
		pw := []byte("memory constrained")
		record, export := jsRegister(p, cred, pw, nil)
		if err, e := goLogin(p, cred, record, pw, MemoryConstrainedKSF); err != nil || !bytes.Equal(e, export) {
			t.Fatalf("Go login with MemoryConstrainedKSF to serenity's default-KSF record: %v", err)
		}
		if err, _ := goLogin(p, cred, record, pw, DefaultKSF); !errors.Is(err, ErrWrongPassword) {
			t.Fatalf("Go login with DefaultKSF: %v, want ErrWrongPassword (the profiles differ)", err)
		}
		if ok, e := jsLogin(p, cred, record, pw, nil); !ok || !bytes.Equal(e, export) {
			t.Fatal("serenity login with its default KSF")
		}
	})
}
