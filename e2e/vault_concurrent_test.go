package e2e

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
)

// TestVaultConcurrentWrongGuesses runs 200 concurrent wrong-password
// recoveries of one account against real vault and relay processes and
// counts, at the vault, the KE2 responses released: never more than the
// budget of 10.
func TestVaultConcurrentWrongGuesses(t *testing.T) {
	f := startProcFleet(t)
	bundle, err := recovery.LoadBundle(f.bundle, f.root)
	if err != nil {
		t.Fatal(err)
	}
	c, err := recovery.New(recovery.Settings{
		Relay: f.relayURL, Account: "crowd", Token: f.token(t, "crowd"), VaultToken: f.vaultToken(t, "crowd"), Bundle: bundle,
		InsecureDevKSF: true, HTTPClient: &http.Client{Timeout: 60 * time.Second},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	good := []byte("the right password")
	if _, err := c.Enroll(ctx, good, backupkey.New(), recovery.Authorization{}); err != nil {
		t.Fatal(err)
	}
	before := vaultGuesses(t, f.metricsURL)
	var wg sync.WaitGroup
	var wrong, destroyed, other atomic.Int64
	for range 200 {
		wg.Go(func() {
			_, _, err := c.Recover(ctx, []byte("a wrong password"))
			switch {
			case errors.Is(err, recovery.ErrWrongPassword):
				wrong.Add(1)
			case errors.Is(err, recovery.ErrDestroyed):
				destroyed.Add(1)
			default:
				other.Add(1)
			}
		})
	}
	wg.Wait()
	released := vaultGuesses(t, f.metricsURL) - before
	t.Logf("200 concurrent wrong recoveries: %d KE2 released; clients told: %d wrong password, %d destroyed, %d other", released, wrong.Load(), destroyed.Load(), other.Load())
	if released > 10 {
		t.Fatalf("%d KE2 responses released for a budget of 10", released)
	}
	if _, _, err := c.Recover(ctx, good); !errors.Is(err, recovery.ErrDestroyed) {
		t.Fatalf("the right password after the budget was spent: %v", err)
	}
}

// vaultGuesses reads coffer_vault_guesses_total from a vault's metrics.
func vaultGuesses(t *testing.T, metricsURL string) int {
	t.Helper()
	resp, err := http.Get(metricsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "coffer_vault_guesses_total") {
			fields := strings.Fields(line)
			n, _ := strconv.ParseFloat(fields[len(fields)-1], 64)
			return int(n)
		}
	}
	t.Fatal("no coffer_vault_guesses_total metric")
	return 0
}
