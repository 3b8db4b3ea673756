package attack

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bytemare/ecc"

	"github.com/cofferhq/coffer/internal/device/backupkey"
	"github.com/cofferhq/coffer/internal/device/recovery"
	"github.com/cofferhq/coffer/internal/faultharness"
	"github.com/cofferhq/coffer/internal/protocol/keywrap"
	"github.com/cofferhq/coffer/internal/protocol/pake"
	"github.com/cofferhq/coffer/internal/protocol/toprf"
	"github.com/cofferhq/coffer/internal/server/fleetca"
	"github.com/cofferhq/coffer/internal/server/vault"
)

// TestThresholdReshare is issue 11's membership change against real 'vault
// serve' processes (PROTOCOL.md §7, resharing; OPERATIONS.md): a 2-of-3
// threshold fleet {r1, r2, r3} replaces r3 by r4. Before the reshare the
// records still live under generation 1, which r4 holds no share of, so
// with r2 down the fleet (r1, r4: a Raft majority) cannot serve them — the
// hole this closes. The ceremony deals generation 2 for indices {1, 2, 4},
// the staying replicas restart holding both generations, r4 joins holding
// its new share, and 'coffer vault reshare' moves every record. Then r1
// down or r2 down, the fleet serves every record through the new shares;
// the users recover with the same passwords; and the removed r3's
// old share, together with a current replica's new one, combines into
// nothing that tests a password (while two new shares do: the control).
func TestThresholdReshare(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c, err := faultharness.StartCluster(ctx, faultharness.Config{Replicas: 3, GuessLimit: 10, Dir: filepath.Join(dir, "cluster"), Bin: coffer, Threshold: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fleet := c.FleetDir()
	secrets, err := vault.LoadSecrets(filepath.Join(fleet, "secrets.json"))
	if err != nil {
		t.Fatal(err)
	}
	client := func(account string) *recovery.Client { return clusterClient(t, c, account) }
	accounts := []string{"reshare-ana", "reshare-ben"}
	keys := map[string]*backupkey.Key{}
	password := func(a string) []byte { return []byte("the password of " + a) }
	for _, a := range accounts {
		keys[a] = backupkey.New()
		if _, err := client(a).Enroll(ctx, password(a), keys[a], recovery.Authorization{}); err != nil {
			t.Fatalf("enrolling %s: %v", a, err)
		}
	}
	// More records, for a reshare that a crash interrupts (below).
	for k := range 100 {
		a := fmt.Sprintf("reshare-bulk-%02d", k)
		keys[a] = backupkey.New()
		if _, err := client(a).Enroll(ctx, password(a), keys[a], recovery.Authorization{}); err != nil {
			t.Fatalf("enrolling %s: %v", a, err)
		}
		accounts = append(accounts, a)
	}
	// One wrong guess for ana: the reshare must keep the count.
	if _, _, err := client(accounts[0]).Recover(ctx, []byte("a wrong password")); !errors.As(err, new(*recovery.WrongPasswordError)) {
		t.Fatalf("a wrong password: %v", err)
	}
	recoverAll := func(when string) {
		t.Helper()
		for k, a := range accounts {
			if k >= 2 && k%10 != 0 && !strings.Contains(when, "every record") {
				continue // a sample of the bulk records
			}
			got, _, err := client(a).Recover(ctx, password(a))
			if err != nil || !got.Equal(keys[a]) {
				t.Fatalf("%s: recovering %s: %v", when, a, err)
			}
		}
	}
	bounce := func(i int) {
		t.Helper()
		if err := c.Kill(i); err != nil {
			t.Fatal(err)
		}
		if err := c.Restart(i); err != nil {
			t.Fatal(err)
		}
		if err := c.WaitConverged(ctx, 60*time.Second); err != nil {
			t.Fatal(err)
		}
	}

	// The ceremony deals generation 2 for {1, 2, 4}; r1 and r2 restart
	// holding both of their generations.
	gen2, err := c.DealShares(ctx, 2, 1, 2, 4)
	if err != nil {
		t.Fatal(err)
	}
	gen1 := func(i uint16) string { return filepath.Join(fleet, "oprf-shares", fmt.Sprintf("share-%d.json", i)) }
	for place := range 2 {
		c.SetShares(place, gen1(uint16(place+1)), gen2[uint16(place+1)])
		bounce(place)
	}
	// r3 is removed and replaced by r4, which holds only its new share.
	if err := c.RemoveMember(ctx, 2); err != nil {
		t.Fatal(err)
	}
	c.SetShares(2, gen2[4])
	newID, err := c.Replace(ctx, 2, 60*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	recoverAll("after the replacement, before the reshare")

	// Before: with r2 down, r1 and r4 are a Raft majority but hold one
	// generation-1 share between them: the records cannot be served.
	if err := c.Kill(1); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitLeader(ctx, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, _, err := client(accounts[1]).Recover(ctx, password(accounts[1])); err == nil {
		t.Fatal("before the reshare, r1 and the replacement served a generation-1 record: the test cannot show what the reshare adds")
	} else {
		t.Logf("before the reshare, with r2 down: %v", err)
	}
	if err := c.Restart(1); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitConverged(ctx, 60*time.Second); err != nil {
		t.Fatal(err)
	}

	// The deltas of a reshare go to the leader only: a follower's replica
	// certificate asking another replica for one is refused, while the
	// leader's gets it (the control: without the check, any replica —
	// or a removed one whose certificate has not expired — would collect
	// the deltas that turn an old share into a new one).
	leader, err := c.WaitLeader(ctx, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// The target holds a generation-1 share (r1 or r2), so it has a delta.
	target := 0
	if leader == 0 {
		target = 1
	}
	follower := 3 - leader - target
	mac := hmac.New(sha256.New, secrets.RecordIDKey[:])
	mac.Write([]byte(accounts[1]))
	rid := mac.Sum(nil)
	st, err := client(accounts[1]).Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	epoch := st.Epoch
	askDelta := func(as int) (int, string) {
		d := c.Replicas[as].TLSDir
		tl, err := fleetca.LoadTLS(filepath.Join(d, fleetca.CertFile), filepath.Join(d, fleetca.KeyFile), filepath.Join(d, fleetca.CACertFile))
		if err != nil {
			t.Fatal(err)
		}
		hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tl.ClientConfig("")}}
		body := fmt.Sprintf(`{"kind":"reshare","record":"%x","epoch":%d,"generation":2}`, rid, epoch)
		resp, err := hc.Post(c.Replicas[target].URL+vault.EvaluatePath, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 8<<10))
		return resp.StatusCode, string(b)
	}
	if code, body := askDelta(follower); code != http.StatusForbidden || strings.Contains(body, `"delta"`) {
		t.Fatalf("a follower's certificate asked replica %s for a reshare delta: HTTP %d %s", c.ID(target), code, body)
	}
	if code, body := askDelta(leader); code != http.StatusOK || !strings.Contains(body, `"delta"`) {
		t.Fatalf("the control: the leader's certificate got no delta: HTTP %d %s", code, body)
	}

	// A crash in the middle: the leader SIGKILLed while the reshare walks
	// the records. Each record moves in one Raft entry, so the
	// fleet holds some records at generation 1 and some at 2, each whole;
	// after a restart, the reshare run again finishes the job.
	leader, err = c.WaitLeader(ctx, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	crashed := make(chan error, 1)
	began := time.Now()
	go func() {
		rep, err := c.Reshare(ctx, 2)
		t.Logf("interrupted reshare returned after %v: %+v", time.Since(began), rep)
		crashed <- err
	}()
	time.Sleep(100 * time.Millisecond)
	if err := c.Kill(leader); err != nil {
		t.Fatal(err)
	}
	t.Logf("reshare with its leader %s killed after 100 ms: %v", c.ID(leader), <-crashed)
	if err := c.Restart(leader); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitConverged(ctx, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	rep, err := c.Reshare(ctx, 2)
	if err != nil {
		t.Fatalf("reshare: %v (%+v)", err, rep)
	}
	t.Logf("the reshare run again: %d moved, %d moved before the crash", rep.Moved, rep.Already)
	if !rep.Done || rep.Moved+rep.Already != len(accounts) || rep.Failed != 0 {
		t.Fatalf("reshare report: %+v", rep)
	}
	if rep, err := c.Reshare(ctx, 2); err != nil || rep.Moved != 0 || rep.Already != len(accounts) {
		t.Fatalf("a second reshare: %+v, %v", rep, err)
	}
	recoverAll("after the reshare that a crash interrupted: every record")
	// The staying replicas drop generation 1, as OPERATIONS.md says.
	for place := range 2 {
		c.SetShares(place, gen2[uint16(place+1)])
		bounce(place)
	}
	recoverAll("after the reshare")
	// Either original down: the replacement's new share serves.
	for _, down := range []int{0, 1} {
		if err := c.Kill(down); err != nil {
			t.Fatal(err)
		}
		if _, err := c.WaitLeader(ctx, 30*time.Second); err != nil {
			t.Fatal(err)
		}
		recoverAll(fmt.Sprintf("after the reshare, with %s down (serving: %s and the replacement %s)", c.ID(down), c.ID(1-down), newID))
		if err := c.Restart(down); err != nil {
			t.Fatal(err)
		}
		if err := c.WaitConverged(ctx, 60*time.Second); err != nil {
			t.Fatal(err)
		}
	}

	// The removed replica's old share combines with nothing. The attacker
	// holds r3's generation-1 share file, r1's generation-2 share file,
	// the fleet secrets and r1's disk (a copy taken with r1 stopped).
	if err := c.Kill(0); err != nil {
		t.Fatal(err)
	}
	a := accounts[1]
	acc := accountOnDisk(t, c.Replicas[0].Data, secrets, a)
	if acc.Record.ShareGen != 2 || len(acc.Record.Offset) == 0 {
		t.Fatalf("the record on disk is at generation %d with correction %x", acc.Record.ShareGen, acc.Record.Offset)
	}
	load := func(path string) *toprf.ReplicaSeeds {
		set, err := vault.LoadShareFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return set.ReplicaSeeds
	}
	credID := pake.CredentialID(a, acc.Epoch)
	removedOld, err := load(gen1(3)).Share(credID, nil)
	if err != nil {
		t.Fatal(err)
	}
	current, err := load(gen2[1]).Share(credID, acc.Record.Offset)
	if err != nil {
		t.Fatal(err)
	}
	replacement, err := load(gen2[4]).Share(credID, acc.Record.Offset)
	if err != nil {
		t.Fatal(err)
	}
	public, err := vault.DecodePublicShares(acc.Record.PublicShares)
	if err != nil {
		t.Fatal(err)
	}
	newM, err := toprf.NewMembership([]uint16{1, 2, 4}, 2)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := pake.NewServer(secrets.OPAQUE)
	if err != nil {
		t.Fatal(err)
	}
	ksf := pake.KSF{Time: acc.Record.KSF.Time, MemoryKiB: acc.Record.KSF.MemoryKiB, Threads: acc.Record.KSF.Threads}
	opens := func(evaluate func(blinded []byte) []byte) bool {
		cl := pake.Client{ServerPublicKey: c.Bundle.OPAQUEServerPublicKey, AllowWeakKSF: true}
		st, ke1, err := cl.LoginStart(password(a))
		if err != nil {
			t.Fatal(err)
		}
		defer st.Clear()
		blinded, err := pake.BlindedElement(ke1)
		if err != nil {
			t.Fatal(err)
		}
		z := evaluate(blinded)
		if z == nil {
			return false
		}
		ke2, _, err := srv.KE2FromEvaluation(acc.Record.Opaque, ke1, z)
		if err != nil {
			t.Fatal(err)
		}
		_, export, _, err := cl.LoginFinish(st, password(a), ke2, ksf)
		if err != nil {
			return false
		}
		raw, err := keywrap.Unwrap(export, a, acc.Record.WrappedKey)
		return err == nil && bytes.Equal(raw[:], keys[a].Bytes()[:])
	}
	partials := func(b []byte, shares ...*toprf.KeyShare) []toprf.Partial {
		var out []toprf.Partial
		for _, s := range shares {
			p, err := s.Evaluate(b)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, p)
		}
		return out
	}
	// The old share's partial does not verify against the record's public
	// shares (r3 is not among them), so the fleet's combine refuses it...
	if opens(func(b []byte) []byte {
		z, _, err := toprf.Combine(newM, public, b, partials(b, removedOld, current))
		if err == nil {
			return z
		}
		return nil
	}) {
		t.Fatal("the removed replica's old share combined with a current one in the fleet's combine")
	}
	// ...and interpolated by hand (Lagrange at 0 over indices 3 and 1), the
	// old share taken without and with the record's public correction,
	// they give no evaluation that opens the envelope.
	removedOffset, err := load(gen1(3)).Share(credID, acc.Record.Offset)
	if err != nil {
		t.Fatal(err)
	}
	for _, old := range []*toprf.KeyShare{removedOld, removedOffset} {
		if opens(func(b []byte) []byte { return interpolateAtZero(t, partials(b, old, current)) }) {
			t.Fatal("the removed replica's old share and a current new share tested the password")
		}
	}
	// The control: two current shares (r1's and the replacement's) do.
	if !opens(func(b []byte) []byte {
		z, _, err := toprf.Combine(newM, public, b, partials(b, current, replacement))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(z, interpolateAtZero(t, partials(b, current, replacement))) {
			t.Fatal("interpolateAtZero is not the combine's interpolation")
		}
		return z
	}) {
		t.Fatal("the control failed: two generation-2 shares did not open the envelope, so the attack above proved nothing")
	}
}

// interpolateAtZero is an attacker's own combine: Σ λ_i·Z_i with the
// Lagrange coefficients at 0 over the partials' indices, no proof checked.
func interpolateAtZero(t *testing.T, ps []toprf.Partial) []byte {
	t.Helper()
	g := ecc.Ristretto255Sha512
	acc := g.NewElement()
	for _, p := range ps {
		num, den := g.NewScalar().One(), g.NewScalar().One()
		for _, q := range ps {
			if q.Index != p.Index {
				j := g.NewScalar().SetUInt64(uint64(q.Index))
				num.Multiply(j)
				den.Multiply(j.Copy().Subtract(g.NewScalar().SetUInt64(uint64(p.Index))))
			}
		}
		e := g.NewElement()
		if err := e.Decode(p.Evaluated); err != nil {
			t.Fatal(err)
		}
		acc.Add(e.Multiply(num.Multiply(den.Invert())))
	}
	return acc.Encode()
}
