package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/cofferhq/coffer/client"
	"github.com/cofferhq/coffer/internal/device/recovery"
	"github.com/cofferhq/coffer/storage"
)

func TestExitCode(t *testing.T) {
	_, malformed := client.ParseKey("xyz")
	for _, c := range []struct {
		err  error
		want int
	}{
		{nil, ExitOK},
		{fail("list", errors.New("boom")), ExitError},
		{fail("list", fmt.Errorf("x: %w", client.ErrNoRepository)), ExitError},
		{usagef("restore: no --to"), ExitUsage},
		{errors.New("unknown command \"x\" for \"coffer\""), ExitUsage}, // cobra's own
		{fail("list", fmt.Errorf("--key: %w", malformed)), ExitUsage},
		{fail("list", fmt.Errorf("opening: %w", client.ErrWrongKey)), ExitWrongKey},
		{fail("restore", fmt.Errorf("piece: %w: chunk 2", client.ErrIntegrity)), ExitIntegrity},
		{fail("list", fmt.Errorf("%w: %w: seen 5", client.ErrIntegrity, client.ErrRollback)), ExitIntegrity},
		{fail("backup", fmt.Errorf("put: %w: dial tcp", storage.ErrUnavailable)), ExitUnavailable},
		{fail("restore", fmt.Errorf("recovering: %w", &recovery.WrongPasswordError{GuessesLeft: 7, GuessLimit: 10})), ExitWrongKey},
		{fail("restore", fmt.Errorf("wrong password, and that was the last guess: %w", recovery.ErrDestroyed)), ExitKeyDestroyed},
		{fail("restore", fmt.Errorf("recovering: %w", recovery.ErrDestroyed)), ExitKeyDestroyed},
		{fail("restore", fmt.Errorf("%w: relay x: connection refused", recovery.ErrUnavailable)), ExitUnavailable},
		{fail("restore", fmt.Errorf("%w: fleet bundle: bad signature", recovery.ErrIntegrity)), ExitIntegrity},
		{fail("restore", fmt.Errorf("%w: expired", recovery.ErrAuthentication)), ExitError},
		{fail("disable", fmt.Errorf("turning off: %w", recovery.ErrUnauthorized)), ExitError},
		{fail("init", recovery.ErrWeakPassword), ExitUsage},
		{fail("password check", client.ErrPasswordMismatch), ExitWrongKey},
	} {
		if got := ExitCode(c.err); got != c.want {
			t.Errorf("ExitCode(%v) = %d, want %d", c.err, got, c.want)
		}
	}
}

func TestMessage(t *testing.T) {
	msg := message(fail("restore", fmt.Errorf("the key does not open the repository at /r: %w", client.ErrWrongKey)))
	if !strings.HasPrefix(msg, "restore: the key does not open") || !strings.Contains(msg, ". Check the 64-digit key") || !strings.HasSuffix(msg, ".") {
		t.Errorf("wrong-key message: %q", msg)
	}
	msg = message(fail("restore", fmt.Errorf("piece ab: %w: chunk 1", client.ErrIntegrity)))
	if !strings.Contains(msg, "nothing was restored") {
		t.Errorf("integrity message: %q", msg)
	}
	msg = message(fail("backup", fmt.Errorf("%w: dial tcp 127.0.0.1:1: connection refused", storage.ErrUnavailable)))
	if !strings.Contains(msg, "try again") {
		t.Errorf("unavailable message: %q", msg)
	}
	msg = message(fail("restore", &recovery.WrongPasswordError{GuessesLeft: 7, GuessLimit: 10}))
	if !strings.HasPrefix(msg, "restore: wrong password: 7 guesses left of 10.") || !strings.Contains(msg, "64-digit key") {
		t.Errorf("wrong-password message: %q", msg)
	}
	msg = message(fail("restore", fmt.Errorf("recovering: %w", recovery.ErrDestroyed)))
	if !strings.Contains(msg, "the backups can only be restored with the 64-digit key, if you kept it") {
		t.Errorf("destroyed message: %q", msg)
	}
	msg = message(fail("init", recovery.ErrWeakPassword))
	if !strings.Contains(msg, "Choose a password of at least 8 characters") {
		t.Errorf("weak-password message: %q", msg)
	}
	msg = message(fail("status", fmt.Errorf("%w: token has expired", recovery.ErrAuthentication)))
	if !strings.Contains(msg, "fresh account token") {
		t.Errorf("token message: %q", msg)
	}
}

// TestExitCodes12 (issue 12): the codes added for partial outcomes,
// interruptions and usage mistakes.
func TestExitCodes12(t *testing.T) {
	for _, c := range []struct {
		err  error
		want int
	}{
		{&partialError{code: ExitSkipped, err: fail("backup", errors.New("2 entries"))}, ExitSkipped},
		{&partialError{code: ExitSalvaged, err: fail("restore", fmt.Errorf("x: %w", client.ErrIntegrity))}, ExitSalvaged},
		{fail("backup", fmt.Errorf("walking: %w", context.Canceled)), ExitInterrupted},
		{fail("init", fmt.Errorf("%w: unknown scheme", storage.ErrInvalidLocation)), ExitUsage},
		{fail("restore", fmt.Errorf("%w: no account token", client.ErrVaultSettings)), ExitUsage},
		{fail("list", fmt.Errorf("%w /x: permission denied", client.ErrStateUnreadable)), ExitError},
	} {
		if got := ExitCode(c.err); got != c.want {
			t.Errorf("ExitCode(%v) = %d, want %d", c.err, got, c.want)
		}
	}
	if distinct := map[int]bool{ExitOK: true, ExitError: true, ExitUsage: true, ExitWrongKey: true, ExitKeyDestroyed: true, ExitIntegrity: true, ExitUnavailable: true, ExitSkipped: true, ExitSalvaged: true, ExitInterrupted: true}; len(distinct) != 10 {
		t.Error("exit codes collide")
	}
}
