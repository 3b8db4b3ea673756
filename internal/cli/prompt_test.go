package cli

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/cofferhq/coffer/internal/device/recovery"
)

func TestReadPassword(t *testing.T) {
	var errb bytes.Buffer
	a := &app{Env: Env{Stdin: strings.NewReader("from stdin\nsecond line\n"), Stdout: &errb, Stderr: &errb, Getenv: func(k string) string {
		return map[string]string{"COFFER_PASSWORD": "from the environment"}[k]
	}}}
	pw, err := a.readPassword("t", &passwordFlags{stdin: true}, "Password", true)
	if err != nil || string(pw) != "from stdin" {
		t.Fatalf("--password-stdin: %q %v", pw, err)
	}
	pw, err = a.readPassword("t", &passwordFlags{}, "Password", true)
	if err != nil || string(pw) != "from the environment" {
		t.Fatalf("COFFER_PASSWORD: %q %v", pw, err)
	}
	a.Stdin = strings.NewReader("short\r\n")
	if _, err := a.readPassword("t", &passwordFlags{stdin: true}, "Password", true); ExitCode(err) != ExitUsage || !errors.Is(err, recovery.ErrWeakPassword) {
		t.Fatalf("a short new password: %v", err)
	}
	a.Stdin = strings.NewReader("short\n")
	if pw, err := a.readPassword("t", &passwordFlags{stdin: true}, "Password", false); err != nil || string(pw) != "short" {
		t.Fatalf("a short password to check: %q %v", pw, err)
	}
	a.Stdin = strings.NewReader("")
	if _, err := a.readPassword("t", &passwordFlags{stdin: true}, "Password", false); ExitCode(err) != ExitUsage {
		t.Fatalf("empty stdin: %v", err)
	}
	a.Getenv = func(string) string { return "" }
	if _, err := a.readPassword("t", &passwordFlags{}, "Password", false); ExitCode(err) != ExitUsage || !strings.Contains(err.Error(), "COFFER_PASSWORD") {
		t.Fatalf("no password and no terminal: %v", err)
	}
}
