package vault_test

import (
	"bufio"
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cofferhq/coffer/internal/device/backupkey"
	"github.com/cofferhq/coffer/internal/device/recovery"
	"github.com/cofferhq/coffer/internal/server/devfleet"
)

func startFleet(t *testing.T) *devfleet.Fleet {
	t.Helper()
	f, err := devfleet.Start(context.Background(), devfleet.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func client(t *testing.T, f *devfleet.Fleet, account string) *recovery.Client {
	t.Helper()
	tok, err := f.Token(account, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	vtok, err := f.VaultToken(account, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, err := recovery.New(recovery.Settings{
		Relay: f.RelayURL, Account: account, Token: tok, VaultToken: vtok, Bundle: f.Bundle,
		InsecureDevKSF: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

var (
	good = []byte("correct horse battery")
	bad  = []byte("wrong password guess")
)

func TestEnrollRecover(t *testing.T) {
	f := startFleet(t)
	ctx := context.Background()
	c := client(t, f, "alice")
	key := backupkey.New()
	e, err := c.Enroll(ctx, good, key, recovery.Authorization{})
	if err != nil {
		t.Fatal(err)
	}
	if e.GuessLimit != 10 || e.Epoch == 0 {
		t.Fatalf("enrollment %+v", e)
	}
	// A new device: a fresh client, only the password.
	got, s, err := client(t, f, "alice").Recover(ctx, good)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Equal(key) || s.FailedGuesses != 0 {
		t.Fatalf("recovered another key, or %d failed guesses", s.FailedGuesses)
	}
	// Another account's token cannot reach alice's record.
	if _, _, err := client(t, f, "mallory").Recover(ctx, good); !errors.Is(err, recovery.ErrNotRegistered) {
		t.Fatalf("recover of an unknown account: %v, want ErrNotRegistered", err)
	}
	if _, err := c.Enroll(ctx, []byte("short"), key, recovery.Authorization{}); !errors.Is(err, recovery.ErrWeakPassword) {
		t.Fatalf("short password: %v", err)
	}
}

func TestNineWrongThenRight(t *testing.T) {
	f := startFleet(t)
	ctx := context.Background()
	c := client(t, f, "bob")
	key := backupkey.New()
	if _, err := c.Enroll(ctx, good, key, recovery.Authorization{}); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 9; i++ {
		_, _, err := c.Recover(ctx, bad)
		var w *recovery.WrongPasswordError
		if !errors.As(err, &w) || w.GuessesLeft != 10-i || w.GuessLimit != 10 {
			t.Fatalf("wrong guess %d: %v", i, err)
		}
	}
	got, s, err := c.Recover(ctx, good)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Equal(key) || s.FailedGuesses != 9 || len(s.FailedTimes) != 9 {
		t.Fatalf("after 9 wrong: %+v", s)
	}
	// The count was reset: 9 more wrong guesses still leave one.
	for range 9 {
		c.Recover(ctx, bad)
	}
	if _, _, err := c.Recover(ctx, good); err != nil {
		t.Fatalf("the count was not reset: %v", err)
	}
}

func TestTenWrongDestroys(t *testing.T) {
	f := startFleet(t)
	ctx := context.Background()
	c := client(t, f, "carol")
	if _, err := c.Enroll(ctx, good, backupkey.New(), recovery.Authorization{}); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 10; i++ {
		_, _, err := c.Recover(ctx, bad)
		if i < 10 && !errors.Is(err, recovery.ErrWrongPassword) {
			t.Fatalf("guess %d: %v", i, err)
		}
		if i == 10 && !errors.Is(err, recovery.ErrDestroyed) {
			t.Fatalf("the tenth wrong guess: %v", err)
		}
	}
	if _, _, err := c.Recover(ctx, good); !errors.Is(err, recovery.ErrDestroyed) {
		t.Fatalf("the right password after destruction: %v", err)
	}
	st, err := c.Status(ctx)
	if err != nil || !st.Destroyed || st.Registered {
		t.Fatalf("status %+v %v", st, err)
	}
	// A new key can be enrolled afterwards, with a fresh budget.
	key2 := backupkey.New()
	if _, err := c.Enroll(ctx, good, key2, recovery.Authorization{}); err != nil {
		t.Fatal(err)
	}
	if got, _, err := c.Recover(ctx, good); err != nil || !got.Equal(key2) {
		t.Fatalf("recover after re-enrolment: %v", err)
	}
}

func TestReRegistrationNeedsAuthorization(t *testing.T) {
	f := startFleet(t)
	ctx := context.Background()
	c := client(t, f, "dave")
	key := backupkey.New()
	c.Enroll(ctx, good, key, recovery.Authorization{})
	for range 5 {
		c.Recover(ctx, bad)
	}
	// An attacker with the account's token (but neither password nor key)
	// cannot replace the record to get a fresh budget.
	if _, err := c.Enroll(ctx, []byte("attacker password"), backupkey.New(), recovery.Authorization{}); !errors.Is(err, recovery.ErrUnauthorized) {
		t.Fatalf("unauthorized re-registration: %v", err)
	}
	if _, err := c.Enroll(ctx, []byte("attacker password"), backupkey.New(), recovery.Authorization{Key: backupkey.New()}); !errors.Is(err, recovery.ErrUnauthorized) {
		t.Fatalf("re-registration with another key's proof: %v", err)
	}
	st, _ := c.Status(ctx)
	if st.GuessesUsed != 5 {
		t.Fatalf("budget changed by refused re-registrations: %+v", st)
	}
	if err := c.Disable(ctx, recovery.Authorization{Key: backupkey.New()}); err == nil || !errors.Is(err, recovery.ErrUnauthorized) {
		t.Fatalf("disable with a wrong key: %v", err)
	}
	// The owner changes the password with the key.
	newPW := []byte("a brand new password")
	if _, err := c.ChangePassword(ctx, key, newPW); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Recover(ctx, good); !errors.Is(err, recovery.ErrWrongPassword) {
		t.Fatalf("old password after change: %v", err)
	}
	got, s, err := c.Recover(ctx, newPW)
	if err != nil || !got.Equal(key) {
		t.Fatalf("new password: %v", err)
	}
	// A login ticket authorizes one re-registration.
	if _, err := c.Enroll(ctx, good, key, recovery.Authorization{Session: s}); err != nil {
		t.Fatalf("re-registration with a ticket: %v", err)
	}
	if _, err := c.Enroll(ctx, newPW, key, recovery.Authorization{Session: s}); !errors.Is(err, recovery.ErrUnauthorized) {
		t.Fatalf("second use of a ticket: %v", err)
	}
	// Turn off, then on again.
	if err := c.Disable(ctx, recovery.Authorization{Key: key}); err != nil {
		t.Fatal(err)
	}
	if st, _ := c.Status(ctx); st.Registered || !st.Disabled {
		t.Fatalf("status after disable: %+v", st)
	}
	if _, _, err := c.Recover(ctx, good); !errors.Is(err, recovery.ErrNotRegistered) {
		t.Fatalf("recover after disable: %v, want ErrNotRegistered", err)
	}
	if _, err := c.Enroll(ctx, good, key, recovery.Authorization{}); err != nil {
		t.Fatalf("enable again: %v", err)
	}
}

// TestConcurrentGuessesBounded sends 200 concurrent wrong logins for one
// account and counts, at the vault, the KE2 responses released.
func TestConcurrentGuessesBounded(t *testing.T) {
	f := startFleet(t)
	ctx := context.Background()
	c := client(t, f, "erin")
	if _, err := c.Enroll(ctx, good, backupkey.New(), recovery.Authorization{}); err != nil {
		t.Fatal(err)
	}
	before := guesses(t, f)
	var wg sync.WaitGroup
	var wrong, destroyed, other atomic.Int64
	for range 200 {
		wg.Go(func() {
			_, _, err := c.Recover(ctx, bad)
			switch {
			case errors.Is(err, recovery.ErrWrongPassword):
				wrong.Add(1)
			case errors.Is(err, recovery.ErrDestroyed):
				destroyed.Add(1)
			default:
				if other.Add(1) == 1 {
					t.Logf("first other error: %v", err)
				}
			}
		})
	}
	wg.Wait()
	released := guesses(t, f) - before
	t.Logf("200 concurrent wrong logins: %d KE2 released, %d told wrong, %d told destroyed, %d other", released, wrong.Load(), destroyed.Load(), other.Load())
	if released > 10 {
		t.Fatalf("%d KE2 responses released for a budget of 10", released)
	}
	if wrong.Load() > 10 {
		t.Fatalf("%d clients learned a wrong-password answer", wrong.Load())
	}
	if _, _, err := c.Recover(ctx, good); !errors.Is(err, recovery.ErrDestroyed) {
		t.Fatalf("after the budget: %v", err)
	}
}

// guesses reads coffer_vault_guesses_total from the vault's metrics.
func guesses(t *testing.T, f *devfleet.Fleet) int {
	t.Helper()
	resp, err := http.Get(f.MetricsURL) // not on the VaultService port
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "coffer_vault_guesses_total "); ok {
			n, _ := strconv.ParseFloat(v, 64)
			return int(n)
		}
	}
	t.Fatal("no coffer_vault_guesses_total metric")
	return 0
}
