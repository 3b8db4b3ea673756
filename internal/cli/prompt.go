package cli

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/cofferhq/coffer/client"
)

// Reading passwords.

// passwordFlags are the ways to give a password.
type passwordFlags struct {
	stdin bool
}

func (p *passwordFlags) add(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&p.stdin, "password-stdin", false, "read the password from the first line of standard input (for scripts; or set COFFER_PASSWORD)")
}

// readPassword gets a password: the first line of stdin (--password-stdin),
// COFFER_PASSWORD, or a prompt without echo when stdin is a terminal. A new
// password (confirm) is checked for length and typed twice at a prompt.
func (a *app) readPassword(op string, p *passwordFlags, prompt string, confirm bool) ([]byte, error) {
	var pw []byte
	switch {
	case p.stdin:
		line, err := bufio.NewReader(a.Stdin).ReadString('\n')
		if err != nil && line == "" {
			return nil, usagef("%s: --password-stdin: no password on standard input", op)
		}
		pw = []byte(strings.TrimRight(line, "\r\n"))
	case a.Getenv("COFFER_PASSWORD") != "":
		pw = []byte(a.Getenv("COFFER_PASSWORD"))
	default:
		f, ok := a.Stdin.(*os.File)
		if !ok || !term.IsTerminal(int(f.Fd())) {
			return nil, usagef("%s: no password: type it at a terminal, or give it with --password-stdin (first line of standard input) or the COFFER_PASSWORD environment variable", op)
		}
		fmt.Fprintf(a.Stderr, "%s: ", prompt)
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(a.Stderr)
		if err != nil {
			return nil, fail(op, fmt.Errorf("reading the password: %w", err))
		}
		pw = b
		if confirm {
			if err := client.ValidatePassword(pw); err != nil {
				return nil, fail(op, err)
			}
			fmt.Fprint(a.Stderr, "Type it again: ")
			again, err := term.ReadPassword(int(f.Fd()))
			fmt.Fprintln(a.Stderr)
			if err != nil {
				return nil, fail(op, fmt.Errorf("reading the password: %w", err))
			}
			same := bytes.Equal(pw, again)
			clear(again)
			if !same {
				clear(pw)
				return nil, usagef("%s: the two passwords differ; nothing was changed", op)
			}
		}
	}
	if len(pw) == 0 {
		return nil, usagef("%s: the password is empty", op)
	}
	if confirm {
		if err := client.ValidatePassword(pw); err != nil {
			clear(pw)
			return nil, fail(op, err)
		}
	}
	return pw, nil
}
