package attack

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/cofferhq/coffer/internal/device/backupkey"
	"github.com/cofferhq/coffer/internal/device/recovery"
	"github.com/cofferhq/coffer/internal/faultharness"
	"github.com/cofferhq/coffer/internal/protocol/keywrap"
	"github.com/cofferhq/coffer/internal/protocol/pake"
	"github.com/cofferhq/coffer/internal/protocol/toprf"
	"github.com/cofferhq/coffer/internal/server/vault"
	"github.com/cofferhq/coffer/internal/server/vaultstate"
)

// TestThresholdFleet is issue 11's property against real 'vault serve'
// processes: a 2-of-3 threshold fleet ('vault init --replicas 3', each
// replica with its own OPRF share file and no OPRF seed anywhere) serves
// unmodified clients; it still serves with one replica down; and an
// offline attacker holding one replica's complete material — its share
// file, the fleet secrets, its state.db — cannot test a password guess,
// while two replicas' material can (the control, so the attack is real).
func TestThresholdFleet(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := faultharness.StartCluster(ctx, faultharness.Config{Replicas: 3, GuessLimit: 5, Dir: filepath.Join(dir, "cluster"), Bin: coffer, Threshold: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fleet := filepath.Join(dir, "cluster", "fleet")
	secrets, err := vault.LoadSecrets(filepath.Join(fleet, "secrets.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(secrets.OPAQUE.OPRFSeed) != 0 {
		t.Fatal("a threshold fleet's secrets hold an OPRF seed")
	}
	client := func(account string) *recovery.Client { return clusterClient(t, c, account) }
	const account, password = "threshold-owner", "the owner's right password"
	key := backupkey.New()
	if _, err := client(account).Enroll(ctx, []byte(password), key, recovery.Authorization{}); err != nil {
		t.Fatalf("enrolling on the threshold fleet: %v", err)
	}
	got, _, err := client(account).Recover(ctx, []byte(password))
	if err != nil || !got.Equal(key) {
		t.Fatalf("recovering on the threshold fleet: %v", err)
	}
	if _, _, err := client(account).Recover(ctx, []byte("a wrong password")); !errors.As(err, new(*recovery.WrongPasswordError)) {
		t.Fatalf("a wrong password on the threshold fleet: %v", err)
	}

	// One replica down (a follower): 2 of 3 still evaluate.
	leader, err := c.WaitLeader(ctx, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	down := c.Followers(leader)[0]
	if err := c.Kill(down); err != nil {
		t.Fatal(err)
	}
	if got, _, err := client(account).Recover(ctx, []byte(password)); err != nil || !got.Equal(key) {
		t.Fatalf("recovering with replica %s down: %v", c.ID(down), err)
	}
	if err := c.Restart(down); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitConverged(ctx, 30*time.Second); err != nil {
		t.Fatal(err)
	}

	// The offline attack. The attacker copies a stopped replica's disk.
	victim := c.Followers(leader)[0]
	if err := c.Kill(victim); err != nil {
		t.Fatal(err)
	}
	acc := accountOnDisk(t, c.Replicas[victim].Data, secrets, account)
	if len(acc.Record.PublicShares) == 0 {
		t.Fatal("the record on disk has no public shares: it was not registered through the threshold path")
	}
	share := func(i int) *toprf.ReplicaSeeds {
		rs, err := vault.LoadShareFile(filepath.Join(fleet, "oprf-shares", fmt.Sprintf("share-%d.json", i)))
		if err != nil {
			t.Fatal(err)
		}
		return rs.ReplicaSeeds
	}
	credID := pake.CredentialID(account, acc.Epoch)
	ksf := pake.KSF{Time: acc.Record.KSF.Time, MemoryKiB: acc.Record.KSF.MemoryKiB, Threads: acc.Record.KSF.Threads}
	srv, err := pake.NewServer(secrets.OPAQUE)
	if err != nil {
		t.Fatal(err)
	}
	// tryKey runs the OPAQUE client's finish for the right password
	// against a KE2 built from evaluated: true if the envelope opens.
	tryKey := func(evaluate func(blinded []byte) []byte) bool {
		cl := pake.Client{ServerPublicKey: c.Bundle.OPAQUEServerPublicKey, AllowWeakKSF: true}
		st, ke1, err := cl.LoginStart([]byte(password))
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
		_, export, _, err := cl.LoginFinish(st, []byte(password), ke2, ksf)
		if err != nil {
			return false
		}
		raw, err := keywrap.Unwrap(export, account, acc.Record.WrappedKey)
		return err == nil && bytes.Equal(raw[:], key.Bytes()[:])
	}
	own := share(victim + 1)
	ks, err := own.Share(credID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if tryKey(func(b []byte) []byte {
		p, err := ks.Evaluate(b)
		if err != nil {
			t.Fatal(err)
		}
		return p.Evaluated // the replica's share taken as the whole key
	}) {
		t.Fatal("one replica's material tested the password offline")
	}
	public, err := vault.DecodePublicShares(acc.Record.PublicShares)
	if err != nil {
		t.Fatal(err)
	}
	if tryKey(func(b []byte) []byte {
		p, err := ks.Evaluate(b)
		if err != nil {
			t.Fatal(err)
		}
		z, _, err := toprf.Combine(own.Membership, public, b, []toprf.Partial{p})
		if err == nil {
			return z
		}
		return nil // one partial does not combine
	}) {
		t.Fatal("one replica's partial combined into the OPRF evaluation")
	}
	// The control: two replicas' material (a threshold) does test it.
	other := share((victim+1)%3 + 1)
	ko, err := other.Share(credID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !tryKey(func(b []byte) []byte {
		p1, _ := ks.Evaluate(b)
		p2, _ := ko.Evaluate(b)
		z, _, err := toprf.Combine(own.Membership, public, b, []toprf.Partial{p1, p2})
		if err != nil {
			t.Fatal(err)
		}
		return z
	}) {
		t.Fatal("the control failed: two replicas' shares did not open the envelope, so the attack above proved nothing")
	}
}

// accountOnDisk reads account's state from a stopped replica's state.db,
// as the holder of its disk can (the test fleet does not seal its disks).
func accountOnDisk(t *testing.T, dataDir string, secrets *vault.Secrets, account string) *vaultstate.Account {
	t.Helper()
	m := hmac.New(sha256.New, secrets.RecordIDKey[:])
	m.Write([]byte(account))
	rid := m.Sum(nil)
	path := filepath.Join(dataDir, "state.db")
	if _, err := os.Stat(path); err != nil {
		t.Fatal(err)
	}
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: 5 * time.Second, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var v []byte
	db.View(func(tx *bbolt.Tx) error {
		if b := tx.Bucket([]byte("records")); b != nil {
			v = bytes.Clone(b.Get(rid))
		}
		return nil
	})
	if v == nil {
		t.Fatal("the replica's state.db holds no record for the account")
	}
	acc := &vaultstate.Account{}
	if err := acc.UnmarshalBinary(v); err != nil {
		t.Fatal(err)
	}
	if !acc.Live() {
		t.Fatal("the record on disk is not live")
	}
	return acc
}

// clusterClient is a recovery client of account against the cluster's
// relay, with tokens the cluster mints.
func clusterClient(t *testing.T, c *faultharness.Cluster, account string) *recovery.Client {
	t.Helper()
	tok, vtok, err := c.Tokens(account)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := recovery.New(recovery.Settings{Relay: c.RelayURL, Account: account, Token: tok, VaultToken: vtok, Bundle: c.Bundle,
		InsecureDevKSF: true, HTTPClient: &http.Client{Timeout: 30 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	return rc
}
