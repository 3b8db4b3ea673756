package vault_test

// Benchmarks of one password recovery (LoginStart + LoginFinish, PROTOCOL.md
// section 5), from the cryptography alone to the whole path through the
// relay, the vault and a Raft commit:
//
//	go test ./internal/server/vault -run '^$' -bench ServerCryptoPerRecovery -benchtime 2000x -count 5
//	go test ./internal/server/vault -run '^$' -bench RecoveryEndToEnd -benchtime 2000x -count 3
//	go test ./internal/server/vault -run '^$' -bench VaultExchange -benchtime 1000x -count 3
//	go test ./internal/server/vault -run '^$' -bench ClientCryptoPerRecovery/TestKSF -benchtime 2000x -count 3
//	go test ./internal/server/vault -run '^$' -bench ClientCryptoPerRecovery/DefaultKSF -benchtime 3x
//
// Besides ns/op (wall time, which a shared machine inflates), each reports
// cpu-µs/op: the process's CPU time (user + system, all goroutines, GC
// included) per recovery, from getrusage. The end-to-end benchmarks run
// client and fleet in one process, so their cpu-µs/op is client + relay +
// vault; subtract BenchmarkClientCryptoPerRecovery/TestKSF for the fleet's
// share, or use the load generator in bench/vault, which measures the
// fleet's process alone.

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/cofferhq/coffer/internal/device/backupkey"
	"github.com/cofferhq/coffer/internal/device/recovery"
	"github.com/cofferhq/coffer/internal/protocol/channel"
	"github.com/cofferhq/coffer/internal/protocol/keywrap"
	"github.com/cofferhq/coffer/internal/protocol/pake"
	"github.com/cofferhq/coffer/internal/protocol/vaultv1"
	"github.com/cofferhq/coffer/internal/server/devfleet"
	"github.com/cofferhq/coffer/internal/server/replica"
	"github.com/cofferhq/coffer/internal/server/vault"
	"github.com/cofferhq/coffer/internal/server/vaultstate"
	"github.com/cofferhq/coffer/token"
)

// cpuTime is this process's CPU time so far (user + system).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cpuMeter reports cpu-µs/op at the end of a benchmark.
type cpuMeter struct {
	b     *testing.B
	start time.Duration
}

// startCPU resets the benchmark timer and starts counting CPU time.
func startCPU(b *testing.B) *cpuMeter {
	b.ResetTimer()
	return &cpuMeter{b: b, start: cpuTime()}
}

// stop stops the timer and reports cpu-µs/op and, if rate is set, ops per
// second of wall time under that name.
func (m *cpuMeter) stop(rate string) {
	b := m.b
	b.StopTimer()
	cpu := cpuTime() - m.start
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/op")
	if rate != "" {
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), rate)
	}
}

// stopPerCore is stop for single-goroutine CPU-bound loops: it also
// reports recoveries per second of one core's CPU time (1e6 / cpu-µs/op),
// which a shared machine disturbs less than wall time.
func (m *cpuMeter) stopPerCore() {
	b := m.b
	b.StopTimer()
	cpu := cpuTime() - m.start
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/op")
	if cpu > 0 {
		b.ReportMetric(float64(b.N)/cpu.Seconds(), "recoveries/core-s")
	}
}

// cryptoFixture is a fleet's secrets, one registered OPAQUE record, and
// requests sealed to the fleet, made outside the timed loops.
type cryptoFixture struct {
	secrets   *vault.Secrets
	recipient *channel.Recipient
	opaque    *pake.Server
	account   string
	credID    []byte
	record    []byte
	ke1       []byte
	ke3       []byte
	// Sealed requests (fresh request ids), used round robin: opening is
	// stateless, so reuse does not change its cost.
	loginStart, loginFinish [][]byte
	// Marshalled responses of the right sizes, to seal.
	lsResp, lfResp []byte
	requestID      []byte
}

const fixtureRequests = 64

// newSecrets returns new fleet secrets and the OPAQUE server over them.
func newSecrets(b *testing.B) (*vault.Secrets, *pake.Server) {
	b.Helper()
	secrets, err := vault.GenerateSecrets()
	if err != nil {
		b.Fatal(err)
	}
	srv, err := pake.NewServer(secrets.OPAQUE)
	if err != nil {
		b.Fatal(err)
	}
	return secrets, srv
}

func newCryptoFixture(b *testing.B) *cryptoFixture {
	b.Helper()
	secrets, srv := newSecrets(b)
	f := &cryptoFixture{
		secrets: secrets, recipient: channel.NewRecipient(secrets.HPKE, secrets.FleetID), opaque: srv,
		account: "alice@example.com", requestID: make([]byte, vaultstate.RequestIDSize),
	}
	f.credID = pake.CredentialID(f.account, 1)
	cl := pake.Client{ServerPublicKey: secrets.OPAQUE.PublicKey, AllowWeakKSF: true}
	pw := []byte("correct horse battery")
	st, req, err := cl.RegistrationStart(pw)
	if err != nil {
		b.Fatal(err)
	}
	resp, err := srv.RegistrationResponse(f.credID, req)
	if err != nil {
		b.Fatal(err)
	}
	if f.record, _, err = cl.RegistrationFinish(st, pw, resp, pake.TestKSF); err != nil {
		b.Fatal(err)
	}
	lst, ke1, err := cl.LoginStart(pw)
	if err != nil {
		b.Fatal(err)
	}
	ke2, mac, err := srv.GenerateKE2(f.credID, f.record, ke1)
	if err != nil {
		b.Fatal(err)
	}
	ke3, _, _, err := cl.LoginFinish(lst, pw, ke2, pake.TestKSF)
	if err != nil {
		b.Fatal(err)
	}
	if !pake.VerifyKE3(ke3, mac) {
		b.Fatal("KE3 does not verify")
	}
	f.ke1, f.ke3 = ke1, ke3

	pub := secrets.HPKE.PublicKey()
	for range fixtureRequests {
		f.loginStart = append(f.loginStart, f.seal(b, pub, &vaultv1.Request{Op: &vaultv1.Request_LoginStart{LoginStart: &vaultv1.LoginStart{Ke1: ke1}}}))
		f.loginFinish = append(f.loginFinish, f.seal(b, pub, &vaultv1.Request{Op: &vaultv1.Request_LoginFinish{LoginFinish: &vaultv1.LoginFinish{LoginId: make([]byte, vaultstate.LoginIDSize), Ke3: ke3}}}))
	}
	f.lsResp, _ = proto.Marshal(&vaultv1.Response{RequestId: f.requestID, Result: &vaultv1.Response_LoginStart{LoginStart: &vaultv1.LoginStartResult{
		Ke2: ke2, Ksf: &vaultv1.KSFParams{Algorithm: pake.KSFAlgorithm, Time: 2, MemoryKib: 256 << 10, Threads: 4},
		LoginId: make([]byte, vaultstate.LoginIDSize), GuessesUsed: 1, GuessLimit: 10,
	}}})
	f.lfResp, _ = proto.Marshal(&vaultv1.Response{RequestId: f.requestID, Result: &vaultv1.Response_LoginFinish{LoginFinish: &vaultv1.LoginFinishResult{
		WrappedKey: make([]byte, 60), LoginTicket: make([]byte, 32), Epoch: 1, PreviousSuccessUnixMs: time.Now().UnixMilli(),
	}}})
	return f
}

func (f *cryptoFixture) seal(b *testing.B, pub *channel.PublicKey, req *vaultv1.Request) []byte {
	req.Account = f.account
	req.RequestId = make([]byte, vaultstate.RequestIDSize)
	rand.Read(req.RequestId)
	req.TimeUnixMs = time.Now().UnixMilli()
	plain, err := proto.Marshal(req)
	if err != nil {
		b.Fatal(err)
	}
	sealed, _, err := channel.Seal(pub, f.secrets.FleetID, f.account, plain)
	if err != nil {
		b.Fatal(err)
	}
	return sealed
}

func (f *cryptoFixture) recordID() vaultstate.RecordID {
	m := hmac.New(sha256.New, f.secrets.RecordIDKey[:])
	m.Write([]byte(f.account))
	var id vaultstate.RecordID
	m.Sum(id[:0])
	return id
}

// BenchmarkServerCryptoPerRecovery is the cost floor: the cryptography a
// vault does for one recovery, without Raft, HTTP or protobuf — two HPKE
// opens (ML-KEM-768 + X25519 decapsulation, HKDF, AES-GCM), the record-id
// HMAC, OPAQUE's KE2 (OPRF evaluation and 3DH), the response seals (HKDF,
// AES-GCM), the ticket hash and the constant-time KE3 check. The parts are
// measured alone too; "all+proto" adds the protobuf work of server.go.
func BenchmarkServerCryptoPerRecovery(b *testing.B) {
	f := newCryptoFixture(b)
	loginStart := func(i int) {
		_, resp, err := f.recipient.Open(f.loginStart[i%fixtureRequests], f.account)
		if err != nil {
			b.Fatal(err)
		}
		_ = f.recordID()
		if _, _, err := f.opaque.GenerateKE2(f.credID, f.record, f.ke1); err != nil {
			b.Fatal(err)
		}
		if _, err := resp.Seal(f.lsResp, f.requestID); err != nil {
			b.Fatal(err)
		}
	}
	loginFinish := func(i int, mac []byte) {
		_, resp, err := f.recipient.Open(f.loginFinish[i%fixtureRequests], f.account)
		if err != nil {
			b.Fatal(err)
		}
		_ = f.recordID()
		_ = vaultstate.HashTicket(f.requestID)
		pake.VerifyKE3(f.ke3, mac)
		if _, err := resp.Seal(f.lfResp, f.requestID); err != nil {
			b.Fatal(err)
		}
	}
	mac := f.ke3
	b.Run("all", func(b *testing.B) {
		m := startCPU(b)
		for i := range b.N {
			loginStart(i)
			loginFinish(i, mac)
		}
		m.stopPerCore()
	})
	b.Run("all+proto", func(b *testing.B) {
		m := startCPU(b)
		for i := range b.N {
			for _, sealed := range [][]byte{f.loginStart[i%fixtureRequests], f.loginFinish[i%fixtureRequests]} {
				plain, resp, err := f.recipient.Open(sealed, f.account)
				if err != nil {
					b.Fatal(err)
				}
				req := new(vaultv1.Request)
				if err := proto.Unmarshal(plain, req); err != nil {
					b.Fatal(err)
				}
				_ = f.recordID()
				var out *vaultv1.Response
				if ls := req.GetLoginStart(); ls != nil {
					ke2, _, err := f.opaque.GenerateKE2(f.credID, f.record, ls.GetKe1())
					if err != nil {
						b.Fatal(err)
					}
					out = &vaultv1.Response{Result: &vaultv1.Response_LoginStart{LoginStart: &vaultv1.LoginStartResult{
						Ke2: ke2, Ksf: &vaultv1.KSFParams{Algorithm: pake.KSFAlgorithm, Time: 2, MemoryKib: 256 << 10, Threads: 4},
						LoginId: make([]byte, vaultstate.LoginIDSize), GuessesUsed: 1, GuessLimit: 10,
					}}}
				} else {
					ticket := make([]byte, 32)
					rand.Read(ticket)
					_ = vaultstate.HashTicket(ticket)
					pake.VerifyKE3(req.GetLoginFinish().GetKe3(), mac)
					out = &vaultv1.Response{Result: &vaultv1.Response_LoginFinish{LoginFinish: &vaultv1.LoginFinishResult{
						WrappedKey: make([]byte, 60), LoginTicket: ticket, Epoch: 1,
					}}}
				}
				out.RequestId = req.GetRequestId()
				pb, err := proto.Marshal(out)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := resp.Seal(pb, req.GetRequestId()); err != nil {
					b.Fatal(err)
				}
			}
		}
		m.stopPerCore()
	})
	b.Run("part=hpke_open_x2", func(b *testing.B) {
		m := startCPU(b)
		for i := range b.N {
			for _, s := range [][]byte{f.loginStart[i%fixtureRequests], f.loginFinish[i%fixtureRequests]} {
				if _, _, err := f.recipient.Open(s, f.account); err != nil {
					b.Fatal(err)
				}
			}
		}
		m.stop("")
	})
	b.Run("part=generate_ke2", func(b *testing.B) {
		m := startCPU(b)
		for range b.N {
			if _, _, err := f.opaque.GenerateKE2(f.credID, f.record, f.ke1); err != nil {
				b.Fatal(err)
			}
		}
		m.stop("")
	})
	b.Run("part=response_seal_x2", func(b *testing.B) {
		_, resp, err := f.recipient.Open(f.loginStart[0], f.account)
		if err != nil {
			b.Fatal(err)
		}
		m := startCPU(b)
		for range b.N {
			resp.Seal(f.lsResp, f.requestID)
			resp.Seal(f.lfResp, f.requestID)
		}
		m.stop("")
	})
	b.Run("part=hmac_sha256_ke3", func(b *testing.B) {
		m := startCPU(b)
		for range b.N {
			_ = f.recordID()
			_ = f.recordID()
			_ = vaultstate.HashTicket(f.requestID)
			pake.VerifyKE3(f.ke3, mac)
		}
		m.stop("")
	})
}

// BenchmarkClientCryptoPerRecovery is a device's cryptography for one
// recovery: OPAQUE's KE1 and KE3 (key stretching included), two HPKE seals
// to the fleet (ML-KEM-768 + X25519 encapsulation), two response opens and
// the unwrap of the backup key. The vault's answers are computed before the
// timed loop. DefaultKSF (Argon2id, 256 MiB) takes about a second per
// recovery: run it with a small -benchtime (e.g. 3x); -short skips it.
func BenchmarkClientCryptoPerRecovery(b *testing.B) {
	for _, k := range []struct {
		name string
		ksf  pake.KSF
	}{{"TestKSF", pake.TestKSF}, {"DefaultKSF", pake.DefaultKSF}} {
		b.Run(k.name, func(b *testing.B) {
			if k.ksf == pake.DefaultKSF && testing.Short() {
				b.Skip("DefaultKSF stretching takes about a second per recovery; not under -short")
			}
			clientRecoveries(b, k.ksf)
		})
	}
}

func clientRecoveries(b *testing.B, ksf pake.KSF) {
	secrets, srv := newSecrets(b)
	recipient := channel.NewRecipient(secrets.HPKE, secrets.FleetID)
	pub := secrets.HPKE.PublicKey()
	const account = "alice@example.com"
	credID := pake.CredentialID(account, 1)
	cl := pake.Client{ServerPublicKey: secrets.OPAQUE.PublicKey, AllowWeakKSF: true}
	pw := []byte("correct horse battery")
	st, req, _ := cl.RegistrationStart(pw)
	resp, _ := srv.RegistrationResponse(credID, req)
	record, exportKey, err := cl.RegistrationFinish(st, pw, resp, ksf)
	if err != nil {
		b.Fatal(err)
	}
	key := backupkey.New()
	wrapped, err := keywrap.Wrap(exportKey, account, key.Bytes())
	if err != nil {
		b.Fatal(err)
	}
	reqID := make([]byte, vaultstate.RequestIDSize)
	plain := make([]byte, 200) // about the size of a marshalled LoginStart request

	// The vault's side of each iteration, done beforehand: a login state
	// with its KE2, and a sealed response with its opener.
	type pending struct {
		st       *pake.LoginState
		ke2      []byte
		openers  [2]*channel.ResponseOpener
		response [2][]byte
	}
	work := make([]pending, b.N)
	for i := range work {
		st, ke1, err := cl.LoginStart(pw)
		if err != nil {
			b.Fatal(err)
		}
		ke2, _, err := srv.GenerateKE2(credID, record, ke1)
		if err != nil {
			b.Fatal(err)
		}
		work[i] = pending{st: st, ke2: ke2}
		for j := range 2 {
			sealed, opener, err := channel.Seal(pub, secrets.FleetID, account, plain)
			if err != nil {
				b.Fatal(err)
			}
			_, responder, err := recipient.Open(sealed, account)
			if err != nil {
				b.Fatal(err)
			}
			r, _ := responder.Seal(make([]byte, 400), reqID)
			work[i].openers[j], work[i].response[j] = opener, r
		}
	}
	m := startCPU(b)
	for i := range b.N {
		w := &work[i]
		// What the client computes: KE1 (its result is not used: the
		// vault's answer was made beforehand from an equivalent one) …
		if _, _, err := cl.LoginStart(pw); err != nil {
			b.Fatal(err)
		}
		for j := range 2 {
			if _, _, err := channel.Seal(pub, secrets.FleetID, account, plain); err != nil {
				b.Fatal(err)
			}
			if _, err := w.openers[j].Open(w.response[j], reqID); err != nil {
				b.Fatal(err)
			}
		}
		// … KE3 with key stretching, and the unwrap.
		_, ek, _, err := cl.LoginFinish(w.st, pw, w.ke2, ksf)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := keywrap.Unwrap(ek, account, wrapped); err != nil {
			b.Fatal(err)
		}
	}
	m.stopPerCore()
}

// e2eFleet is a running fleet with registered accounts and their clients.
type e2eFleet struct {
	clients   []*recovery.Client
	passwords [][]byte
}

// benchAccounts is how many accounts the end-to-end benchmarks register:
// at least the goroutines of RunParallel (parallelism × GOMAXPROCS), so no
// two logins of one account overlap.
const (
	benchAccounts    = 128
	benchParallelism = 16
)

func benchHTTPClient() *http.Client {
	// One keep-alive connection per goroutine; http.DefaultTransport keeps
	// only 2 idle connections per host, so concurrent clients would open
	// and close a connection per request.
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConnsPerHost: benchAccounts,
	}}
}

func registerAccounts(b *testing.B, bundleTok func(string) (string, error), newCfg func(account, tok string) recovery.Settings) *e2eFleet {
	b.Helper()
	e := &e2eFleet{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	e.clients = make([]*recovery.Client, benchAccounts)
	e.passwords = make([][]byte, benchAccounts)
	var failed atomic.Value
	for i := range benchAccounts {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			account := "bench-" + strconv.Itoa(i)
			tok, err := bundleTok(account)
			if err != nil {
				failed.Store(err)
				return
			}
			c, err := recovery.New(newCfg(account, tok))
			if err != nil {
				failed.Store(err)
				return
			}
			pw := []byte("bench password " + strconv.Itoa(i))
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if _, err := c.Enroll(ctx, pw, backupkey.New(), recovery.Authorization{}); err != nil {
				failed.Store(fmt.Errorf("enrolling %s: %w", account, err))
				return
			}
			mu.Lock()
			e.clients[i], e.passwords[i] = c, pw
			mu.Unlock()
		})
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
	return e
}

// run runs the sequential and parallel recovery benchmarks on e.
func (e *e2eFleet) run(b *testing.B) {
	recoverOne := func(b *testing.B, i int) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, _, err := e.clients[i].Recover(ctx, e.passwords[i]); err != nil {
			b.Error(err)
		}
	}
	b.Run("sequential", func(b *testing.B) {
		m := startCPU(b)
		for i := range b.N {
			recoverOne(b, i%benchAccounts)
		}
		m.stop("recoveries/s")
	})
	b.Run("parallel", func(b *testing.B) {
		b.SetParallelism(benchParallelism)
		var next atomic.Int64
		m := startCPU(b)
		b.RunParallel(func(pb *testing.PB) {
			i := int(next.Add(1)-1) % benchAccounts
			for pb.Next() {
				recoverOne(b, i)
			}
		})
		m.stop("recoveries/s")
	})
}

// BenchmarkRecoveryEndToEnd is a whole recovery through the relay, the vault
// and a Raft commit on 127.0.0.1: recovery.Client.Recover with the right
// password and cheap key stretching (pake.TestKSF; stretching runs on
// devices). replicas=1 is devfleet with its defaults; replicas=3 and 5 are
// devfleet.BenchmarkOptions (1 s Raft timeouts). The client runs in
// the same process, so cpu-µs/op includes its share
// (BenchmarkClientCryptoPerRecovery/TestKSF).
func BenchmarkRecoveryEndToEnd(b *testing.B) {
	hc := benchHTTPClient()
	for _, n := range []int{1, 3, 5} {
		b.Run("replicas="+strconv.Itoa(n), func(b *testing.B) {
			o := devfleet.Options{Dir: b.TempDir()}
			if n > 1 {
				o = devfleet.BenchmarkOptions(o.Dir, n)
			}
			f, err := devfleet.Start(context.Background(), o)
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			e := registerAccounts(b, func(a string) (string, error) { return f.Token(a, time.Hour) },
				func(a, tok string) recovery.Settings {
					vtok, err := f.VaultToken(a, time.Hour)
					if err != nil {
						b.Fatal(err)
					}
					return recovery.Settings{Relay: f.RelayURL, Account: a, Token: tok, VaultToken: vtok, Bundle: f.Bundle, InsecureDevKSF: true, HTTPClient: hc}
				})
			e.run(b)
		})
	}
}

// BenchmarkVaultExchange is one recovery served by vault.Server.Exchange
// called directly (no HTTP, no relay), on a single replica with its Raft
// commit: the difference from BenchmarkRecoveryEndToEnd/replicas=1 is the
// two HTTP hops and the relay. vault-µs/op is the wall time spent inside
// the two Exchange calls (Raft commit wait included); the client's work
// runs between them, in the loop, and counts in ns/op and cpu-µs/op.
func BenchmarkVaultExchange(b *testing.B) {
	secrets, err := vault.GenerateSecrets()
	if err != nil {
		b.Fatal(err)
	}
	rep, err := replica.Open(replica.Config{
		ID: "r1", Dir: b.TempDir(), BindAddr: "127.0.0.1:0", Bootstrap: true,
		Logger:           slog.New(slog.DiscardHandler),
		HeartbeatTimeout: 200 * time.Millisecond, ElectionTimeout: 200 * time.Millisecond,
		LeaderLeaseTimeout: 100 * time.Millisecond, CommitTimeout: 5 * time.Millisecond,
	})
	if err != nil {
		b.Fatal(err)
	}
	defer rep.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if _, _, err := rep.WaitForLeader(ctx); err != nil {
		b.Fatal(err)
	}
	tokenPub, tokenKey, err := token.GenerateKey()
	if err != nil {
		b.Fatal(err)
	}
	tokens := &token.Verifier{Key: tokenPub, Issuer: "bench", Audience: "bench-vault"}
	srv, err := vault.New(vault.Config{Secrets: secrets, Replica: rep, AllowWeakKSF: true, Tokens: tokens})
	if err != nil {
		b.Fatal(err)
	}
	const account = "alice@example.com"
	vaultToken, err := token.Mint(tokenKey, token.Claims{Issuer: "bench", Audience: "bench-vault", Subject: account,
		IssuedAt: time.Now(), Expiry: time.Now().Add(time.Hour)})
	if err != nil {
		b.Fatal(err)
	}
	pub := secrets.HPKE.PublicKey()
	cl := pake.Client{ServerPublicKey: secrets.OPAQUE.PublicKey, AllowWeakKSF: true}
	pw := []byte("correct horse battery")
	var inVault time.Duration
	exchange := func(req *vaultv1.Request) *vaultv1.Response {
		req.Account = account
		req.RequestId = make([]byte, vaultstate.RequestIDSize)
		rand.Read(req.RequestId)
		req.TimeUnixMs = time.Now().UnixMilli()
		req.VaultToken = vaultToken
		plain, _ := proto.Marshal(req)
		sealed, opener, err := channel.Seal(pub, secrets.FleetID, account, plain)
		if err != nil {
			b.Fatal(err)
		}
		t := time.Now()
		out, err := srv.Exchange(context.Background(), &vaultv1.VaultExchangeRequest{Account: account, Sealed: sealed})
		inVault += time.Since(t)
		if err != nil {
			b.Fatal(err)
		}
		rb, err := opener.Open(out.GetSealed(), req.RequestId)
		if err != nil {
			b.Fatal(err)
		}
		resp := new(vaultv1.Response)
		if err := proto.Unmarshal(rb, resp); err != nil {
			b.Fatal(err)
		}
		if e := resp.GetError(); e != nil {
			b.Fatalf("vault: %v %s", e.GetCode(), e.GetMessage())
		}
		return resp
	}
	// Register.
	st, rreq, _ := cl.RegistrationStart(pw)
	rs := exchange(&vaultv1.Request{Op: &vaultv1.Request_RegisterStart{RegisterStart: &vaultv1.RegisterStart{RegistrationRequest: rreq}}}).GetRegisterStart()
	record, ek, err := cl.RegistrationFinish(st, pw, rs.GetRegistrationResponse(), pake.TestKSF)
	if err != nil {
		b.Fatal(err)
	}
	key := backupkey.New()
	wrapped, _ := keywrap.Wrap(ek, account, key.Bytes())
	ph := keywrap.ProofHash(keywrap.KeyProof(key.Bytes(), account))
	exchange(&vaultv1.Request{Op: &vaultv1.Request_RegisterFinish{RegisterFinish: &vaultv1.RegisterFinish{
		RegistrationRecord: record, WrappedKey: wrapped, KeyProofHash: ph[:], Epoch: rs.GetEpoch(),
		Ksf: &vaultv1.KSFParams{Algorithm: pake.KSFAlgorithm, Time: pake.TestKSF.Time, MemoryKib: pake.TestKSF.MemoryKiB, Threads: pake.TestKSF.Threads},
	}}})
	b.Run("sequential", func(b *testing.B) {
		inVault = 0
		m := startCPU(b)
		for range b.N {
			lst, ke1, _ := cl.LoginStart(pw)
			ls := exchange(&vaultv1.Request{Op: &vaultv1.Request_LoginStart{LoginStart: &vaultv1.LoginStart{Ke1: ke1}}}).GetLoginStart()
			ke3, _, _, err := cl.LoginFinish(lst, pw, ls.GetKe2(), pake.TestKSF)
			if err != nil {
				b.Fatal(err)
			}
			exchange(&vaultv1.Request{Op: &vaultv1.Request_LoginFinish{LoginFinish: &vaultv1.LoginFinish{LoginId: ls.GetLoginId(), Ke3: ke3}}})
		}
		m.stop("recoveries/s")
		b.ReportMetric(float64(inVault.Microseconds())/float64(b.N), "vault-µs/op")
	})
}

func init() {
	// The fleets' Raft and vault logs go nowhere; keep the default logger
	// quiet too (hashicorp/raft's hclog adapter writes to slog.Default()
	// for replicas without a Logger).
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})))
}
