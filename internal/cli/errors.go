package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/cofferhq/coffer/client"
	"github.com/cofferhq/coffer/storage"
)

// Exit codes, and the messages and hints errors are reported with.

// Exit codes (README.md, "Exit codes").
const (
	ExitOK           = 0
	ExitError        = 1 // any other error
	ExitUsage        = 2 // bad command line, malformed key
	ExitWrongKey     = 3 // wrong password or key
	ExitKeyDestroyed = 4 // the vault erased the key after too many wrong guesses
	ExitIntegrity    = 5 // tampered, truncated or corrupt backup; rollback
	ExitUnavailable  = 6 // service or storage unreachable
	// ExitSkipped: a backup completed and is restorable, but some entries
	// could not be read and are not in it (listed in --json as
	// skipped_entries).
	ExitSkipped = 7
	// ExitSalvaged: 'restore --salvage' restored every intact file of a
	// damaged backup and left out the damaged ones (listed).
	ExitSalvaged = 8
	// ExitInterrupted: SIGINT or SIGTERM stopped the command (128+2, as
	// shells report an interrupted program).
	ExitInterrupted = 130
)

// partialError is the outcome of a command that did its work but not all
// of it: a backup with entries skipped (ExitSkipped), a salvaging restore
// (ExitSalvaged). The command has printed its summary already.
type partialError struct {
	code int
	err  error
}

func (e *partialError) Error() string { return e.err.Error() }

func (e *partialError) Unwrap() error { return e.err }

// usageError is a mistake on the command line.
type usageError struct {
	err  error
	help string // the command whose help to suggest
}

func (e *usageError) Error() string { return e.err.Error() }

func (e *usageError) Unwrap() error { return e.err }

func usagef(format string, a ...any) error {
	return &usageError{err: fmt.Errorf(format, a...)}
}

// opError is the failure of a command's operation, with what to do about
// it when the class of the error does not say enough.
type opError struct {
	op   string // what failed: "backup", "restore", …
	err  error
	hint string // optional; overrides the hint for the error's class
}

func (e *opError) Error() string { return e.op + ": " + e.err.Error() }

func (e *opError) Unwrap() error { return e.err }

// fail wraps err as the failure of op (nil stays nil).
func fail(op string, err error) error {
	if err == nil {
		return nil
	}
	return &opError{op: op, err: err}
}

// ExitCode maps an error to the process exit code.
func ExitCode(err error) int {
	var ue *usageError
	switch {
	case err == nil:
		return ExitOK
	}
	var pe *partialError
	if errors.As(err, &pe) {
		return pe.code
	}
	switch {
	case errors.Is(err, context.Canceled):
		return ExitInterrupted
	case errors.As(err, &ue), errors.Is(err, storage.ErrInvalidLocation), errors.Is(err, client.ErrVaultSettings), errors.Is(err, client.ErrMalformedKey), errors.Is(err, client.ErrWeakPassword):
		return ExitUsage
	case errors.Is(err, client.ErrDestroyed):
		// Before ErrWrongPassword: the last wrong guess wraps only this.
		return ExitKeyDestroyed
	case errors.Is(err, client.ErrWrongKey), errors.Is(err, client.ErrWrongPassword), errors.Is(err, client.ErrPasswordMismatch):
		return ExitWrongKey
	case errors.Is(err, client.ErrIntegrity), errors.Is(err, client.ErrVaultIntegrity), errors.Is(err, client.ErrKSFRefused):
		return ExitIntegrity
	case errors.Is(err, storage.ErrUnavailable), errors.Is(err, client.ErrVaultUnavailable), errors.Is(err, client.ErrThrottled):
		return ExitUnavailable
	}
	var oe *opError
	if !errors.As(err, &oe) {
		// Errors cobra makes itself (unknown command, bad arguments or
		// flags) come back without our wrapping.
		return ExitUsage
	}
	return ExitError
}

// hint says what to do about err, or "".
func hint(err error) string {
	var oe *opError
	if errors.As(err, &oe) && oe.hint != "" {
		return oe.hint
	}
	var ue *usageError
	switch {
	case errors.Is(err, context.Canceled):
		return "Interrupted; nothing was committed (exit 130)"
	case errors.Is(err, client.ErrStateUnreadable):
		return "Check the state directory's owner and permissions (it must be a directory this user can read and write), or give another with --state DIR or COFFER_STATE"
	case errors.Is(err, client.ErrMalformedKey):
		return "Enter the 64 hexadecimal digits exactly as 'coffer init' showed them (spaces and dashes are fine)"
	case errors.Is(err, client.ErrWeakPassword):
		return fmt.Sprintf("Choose a password of at least %d characters: the vault's guess limit stops online guessing, and length is what protects the password if the vault's secrets are ever stolen", client.MinPasswordLength)
	case errors.As(err, &ue):
		if ue.help != "" {
			return "Run '" + ue.help + "' for usage"
		}
		return "Run 'coffer help' for usage"
	case ExitCode(err) == ExitUsage:
		return "Run 'coffer help' for usage"
	case errors.Is(err, client.ErrDestroyed):
		return "The vault erased the key after too many wrong passwords; the backups can only be restored with the 64-digit key, if you kept it ('coffer key show' on a device that still holds the key; 'coffer enable' there stores it in the vault again under a new password) (exit 4)"
	case errors.Is(err, client.ErrWrongPassword):
		return "Check the password (letters, case, spaces). Every wrong guess is counted: after the last one the vault erases the key for good, and only the 64-digit key restores the backups. 'coffer password check' on a device that still holds the key tests a password without spending a guess (exit 3)"
	case errors.Is(err, client.ErrPasswordMismatch):
		return "Nothing was counted: this check ran on this device only (exit 3)"
	case errors.Is(err, client.ErrNotRegistered):
		return "Nothing was counted. Check the account name (--account or COFFER_ACCOUNT) and the fleet; if recovery was never turned on, or was turned off, restore with the 64-digit key ('coffer enable' on a device that holds the key stores it in the vault)"
	case errors.Is(err, client.ErrWrongKey):
		return "Check the 64-digit key: it must be the key shown when this repository was created (exit 3)"
	case errors.Is(err, client.ErrVaultIntegrity):
		return "The relay or the network altered a request or an answer, or the fleet bundle is not this fleet's or does not verify under the pinned root key (check COFFER_FLEET and COFFER_FLEET_ROOT); nothing secret was revealed. Do not trust this relay until you know why (exit 5)"
	case errors.Is(err, client.ErrThrottled):
		var th *client.ThrottledError
		if errors.As(err, &th) {
			return fmt.Sprintf("Nothing was counted. The vault spaces out wrong guesses so that nobody can try passwords quickly: try again in %s (exit 6)", th.RetryAfter.Round(time.Second))
		}
		return "Nothing was counted; try again later (exit 6)"
	case errors.Is(err, client.ErrKSFRefused):
		return "The vault's record was enrolled with development key stretching (--insecure-dev-ksf), which this device refuses for a real account; nothing was counted. Recover with --insecure-dev-ksf only if this is a development fleet (exit 5)"
	case errors.Is(err, client.ErrVaultToken):
		return "Get a fresh vault token (COFFER_VAULT_TOKEN or --vault-token) from the app's backend: it is minted for the vault's audience and travels sealed, so the relay never sees it. For a development fleet source 'coffer dev''s env file again"
	case errors.Is(err, client.ErrAuthentication):
		return "Get a fresh account token (COFFER_TOKEN or --token) from the app's backend: tokens are short-lived. For a development fleet re-run 'coffer dev' (or source its env file again), or mint one with 'coffer relay token'"
	case errors.Is(err, client.ErrUnauthorized):
		return "Run this on a device that holds the backup key, or give the 64-digit key with --key-file FILE or COFFER_KEY; nothing was changed, and the guess count was not reset"
	case errors.Is(err, client.ErrVaultUnavailable):
		return "Check the relay URL (COFFER_RELAY) and the network, then try again; nothing was counted unless the message says otherwise (exit 6)"
	case errors.Is(err, client.ErrAccountInUse):
		return "To go on backing up to that account's repository from this device, run 'coffer join --password --repo URL'; to get the backups here, 'coffer restore --password --repo URL --to DIR' (add --join to do both); to start afresh, use another account"
	case errors.Is(err, client.ErrNoPassword), errors.Is(err, client.ErrNoPasswordVerifier):
		return "Turn password recovery on with 'coffer enable'"
	case errors.Is(err, client.ErrRollback):
		return "Do not trust this storage until you know why; if backups were deleted on purpose, set this device up again with a new --state directory (exit 5)"
	case errors.Is(err, client.ErrReplaced):
		return "Check the repository URL (exit 5)"
	case errors.Is(err, client.ErrIntegrity):
		if oe != nil && oe.op == "restore" {
			return "The backup is damaged or was tampered with; nothing was restored. Run 'coffer verify' to see what is affected; an older backup (--backup N) may still restore (exit 5)"
		}
		return "The backup is damaged or was tampered with. Run 'coffer verify' to see what is affected, and make a fresh backup (exit 5)"
	case errors.Is(err, client.ErrLocked):
		return "If that process was killed, 'coffer unlock' removes its lock (a lock of a Coffer process on this machine that has exited is removed at once; one of another machine when it is 30 minutes old, or with --force)"
	case errors.Is(err, client.ErrUnsupportedVersion):
		return "Upgrade Coffer"
	case errors.Is(err, storage.ErrUnavailable):
		return "Check the network and the repository URL, then try again (exit 6)"
	case errors.Is(err, client.ErrNoGeneration):
		return "Run 'coffer list' to see the backups"
	case errors.Is(err, client.ErrRepositoryExists):
		return "Choose an empty location for a new repository; to carry on backing up to this one from this device, run 'coffer join --repo URL' (with its 64-digit key, or --password)"
	}
	return ""
}

// message formats err as "<what failed>: <why>. <what to do>".
func message(err error) string {
	msg := strings.TrimSpace(err.Error())
	if errors.Is(err, context.Canceled) {
		msg = strings.Replace(msg, context.Canceled.Error(), "interrupted", 1)
	}
	h := hint(err)
	if h == "" || strings.Contains(msg, h) {
		return msg
	}
	if !strings.HasSuffix(msg, ".") {
		msg += "."
	}
	return msg + " " + h + "."
}

// report prints err for a person on stderr, or as JSON on stdout.
func report(err error, asJSON bool, stdout, stderr io.Writer) int {
	code := ExitCode(err)
	var pe *partialError
	if asJSON && errors.As(err, &pe) {
		return code // printed with the summary (printPartialJSON)
	}
	msg := message(err)
	if asJSON {
		b, _ := json.Marshal(struct {
			Error string `json:"error"`
			Code  int    `json:"code"`
		}{msg, code})
		fmt.Fprintf(stdout, "%s\n", b)
		return code
	}
	fmt.Fprintf(stderr, "coffer: %s\n", msg)
	return code
}
