package vault_test

import (
	"context"
	"testing"
	"time"

	"github.com/cofferhq/coffer/internal/device/backupkey"
	"github.com/cofferhq/coffer/internal/device/recovery"
	"github.com/cofferhq/coffer/internal/protocol/bundle"
	"github.com/cofferhq/coffer/internal/server/devfleet"
)

// TestFollowerForwards: a relay that knows only a follower still serves
// every request, because the follower hands each one to the leader (and
// never forwards a forwarded request again).
func TestFollowerForwards(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	f, err := devfleet.Start(ctx, devfleet.Options{Dir: dir, Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WaitForLeader(ctx); err != nil {
		t.Fatal(err)
	}
	follower := f.FollowerURL()
	if follower == "" {
		t.Fatal("no follower")
	}
	keys, err := devfleet.LoadKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	rf, err := devfleet.StartRelay(ctx, devfleet.RelayOptions{Keys: keys, Vaults: []string{follower}})
	if err != nil {
		t.Fatal(err)
	}
	defer rf.Close()

	tok, err := f.Token("forwarded", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	vtok, err := f.VaultToken("forwarded", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	enrollAndRecover(ctx, t, rf.RelayURL, "forwarded", tok, vtok, f.Bundle)
}

// enrollAndRecover enrolls a new key for account through the relay at
// relayURL, recovers it with the right password and checks it is the same.
func enrollAndRecover(ctx context.Context, t *testing.T, relayURL, account, tok, vtok string, bundle *bundle.Bundle) {
	t.Helper()
	newClient := func() *recovery.Client {
		c, err := recovery.New(recovery.Settings{
			Relay: relayURL, Account: account, Token: tok, VaultToken: vtok, Bundle: bundle,
			InsecureDevKSF: true,
		})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	key := backupkey.New()
	if _, err := newClient().Enroll(ctx, good, key, recovery.Authorization{}); err != nil {
		t.Fatalf("enroll: %v", err)
	}
	got, _, err := newClient().Recover(ctx, good)
	if err != nil {
		t.Fatalf("recover: %v", err)
	}
	if !got.Equal(key) {
		t.Fatal("recovered another key")
	}
}
