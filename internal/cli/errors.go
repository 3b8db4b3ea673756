package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/cofferhq/coffer/backupkey"
	"github.com/cofferhq/coffer/client"
	"github.com/cofferhq/coffer/container"
	"github.com/cofferhq/coffer/repository"
	"github.com/cofferhq/coffer/storage"
)

// Exit codes (README.md, "Exit codes").
const (
	ExitOK           = 0
	ExitError        = 1 // any other error
	ExitUsage        = 2 // bad command line, malformed key
	ExitWrongKey     = 3 // wrong password or key
	ExitKeyDestroyed = 4 // the vault erased the key after too many wrong guesses
	ExitIntegrity    = 5 // tampered, truncated or corrupt backup; rollback
	ExitUnavailable  = 6 // service or storage unreachable
)

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
	case errors.As(err, &ue), errors.Is(err, backupkey.ErrMalformed):
		return ExitUsage
	case errors.Is(err, container.ErrWrongKey):
		return ExitWrongKey
	case errors.Is(err, container.ErrIntegrity):
		return ExitIntegrity
	case errors.Is(err, storage.ErrUnavailable):
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
	case errors.Is(err, backupkey.ErrMalformed):
		return "Enter the 64 hexadecimal digits exactly as 'coffer init' showed them (spaces and dashes are fine)"
	case errors.As(err, &ue):
		if ue.help != "" {
			return "Run '" + ue.help + "' for usage"
		}
		return "Run 'coffer help' for usage"
	case ExitCode(err) == ExitUsage:
		return "Run 'coffer help' for usage"
	case errors.Is(err, container.ErrWrongKey):
		return "Check the 64-digit key: it must be the key shown when this repository was created (exit 3)"
	case errors.Is(err, client.ErrRollback):
		return "Do not trust this storage until you know why; if backups were deleted on purpose, set this device up again with a new --state directory (exit 5)"
	case errors.Is(err, client.ErrReplaced):
		return "Check the repository URL (exit 5)"
	case errors.Is(err, container.ErrIntegrity):
		if oe != nil && oe.op == "restore" {
			return "The backup is damaged or was tampered with; nothing was restored. Run 'coffer verify' to see what is affected; an older backup (--backup N) may still restore (exit 5)"
		}
		return "The backup is damaged or was tampered with. Run 'coffer verify' to see what is affected, and make a fresh backup (exit 5)"
	case errors.Is(err, container.ErrUnsupportedVersion):
		return "Upgrade Coffer"
	case errors.Is(err, storage.ErrUnavailable):
		return "Check the network and the repository URL, then try again (exit 6)"
	case errors.Is(err, repository.ErrNoGeneration):
		return "Run 'coffer list' to see the backups"
	case errors.Is(err, repository.ErrRepositoryExists):
		return "Choose an empty location for a new repository"
	case errors.Is(err, context.Canceled):
		return "Interrupted; nothing was committed"
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
