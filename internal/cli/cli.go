// Package cli is the coffer command: a thin layer over package client that
// parses flags, draws progress, prints results for people or as JSON, and
// maps errors to the documented exit codes.
//
// Each command is in its own file, cmd_<name>.go (cmd_vault_serve.go for
// 'coffer vault serve'), with the helpers only it uses. The pieces several
// commands share are named for what they hold: this file (the run's
// environment, Main, the root command), errors.go (exit codes and error
// messages), settings.go (flag, then environment, then saved setting),
// output.go (printing), prompt.go (passwords), repo.go (the key flags and
// opening the repository), vault_settings.go (reaching the vault fleet),
// vault_admin.go (a replica's admin endpoint), daemon.go (what the
// long-running servers share) and dev_replicas.go ('coffer dev
// --replicas N', the child processes).
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"

	"github.com/cofferhq/coffer/client"
	"github.com/cofferhq/coffer/internal/device/devicestate"
)

// Version is Coffer's version; release builds set it with
// -ldflags "-X github.com/cofferhq/coffer/internal/cli.Version=v1.2.3".
var Version = ""

func version() string {
	if Version != "" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v := bi.Main.Version; v != "" && v != "(devel)" {
			return v
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				return "dev-" + s.Value[:12]
			}
		}
	}
	return "dev"
}

// Env is what a run of the command sees of the outside world.
type Env struct {
	// Stdin is where passwords are read from (--password-stdin, or a
	// prompt when it is a terminal *os.File); nil reads nothing.
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	Getenv         func(string) string
}

// app holds the global flags and the environment of one run.
type app struct {
	Env
	statePath string
	repo      string
	json      bool
	quiet     bool
}

// Main runs the coffer command with args (without the program name) and
// returns the exit code.
func Main(ctx context.Context, args []string, env Env) int {
	if env.Getenv == nil {
		env.Getenv = os.Getenv
	}
	if env.Stdin == nil {
		env.Stdin = strings.NewReader("")
	}
	a := &app{Env: env}
	root := a.rootCommand()
	root.SetArgs(args)
	root.SetOut(env.Stdout)
	root.SetErr(env.Stderr)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return ExitOK
	}
	if !a.json {
		// Flags may have failed to parse before --json was seen.
		for _, arg := range args {
			if arg == "--" {
				break
			}
			if arg == "--json" || arg == "--json=true" {
				a.json = true
			}
		}
	}
	if ctx.Err() != nil && !errors.Is(err, context.Canceled) {
		// SIGINT or SIGTERM: whatever failed, it failed because of that.
		err = &opError{op: cmd.Name(), err: fmt.Errorf("%w (%v)", context.Canceled, err)}
	}
	if ExitCode(err) == ExitUsage && !errors.Is(err, client.ErrMalformedKey) && !errors.Is(err, client.ErrWeakPassword) {
		err = &usageError{err: redactKeys(err, args), help: cmd.CommandPath() + " --help"}
	}
	return report(err, a.json, env.Stdout, env.Stderr)
}

// redactKeys returns err with every argument that may be (a part of) a
// 64-digit key taken out of its message: cobra's own errors repeat
// arguments ('unknown command "3f2a…"'), and a key must never be printed
// back.
func redactKeys(err error, args []string) error {
	msg := err.Error()
	changed := false
	for _, arg := range args {
		if strings.HasPrefix(arg, "-") {
			_, v, ok := strings.Cut(arg, "=")
			if !ok {
				continue
			}
			arg = v
		}
		if keyLike(arg) && strings.Contains(msg, arg) {
			msg = strings.ReplaceAll(msg, arg, "<not shown: it may be a key>")
			changed = true
		}
	}
	if !changed {
		return err
	}
	return &redactedError{msg: msg, err: err}
}

// keyLike reports whether s is made of hexadecimal digits, spaces and
// dashes, with at least 4 digits: a 64-digit key, or a group of one.
func keyLike(s string) bool {
	digits := 0
	for _, c := range s {
		switch {
		case c >= '0' && c <= '9', c >= 'a' && c <= 'f', c >= 'A' && c <= 'F':
			digits++
		case c == ' ', c == '-', c == '\t':
		default:
			return false
		}
	}
	return digits >= 4
}

// redactedError is an error whose message had secrets taken out.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }

func (e *redactedError) Unwrap() error { return e.err }

func (a *app) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "coffer",
		Short: "End-to-end encrypted backups",
		Long: `Coffer makes end-to-end encrypted backups of files and directories to a local
directory or S3-compatible storage. Only the 64-digit backup key opens them.

Start with 'coffer init --repo URL' (or 'coffer init --password --repo URL'
to recover the key with a password through a vault fleet), then
'coffer backup PATH...'. 'coffer demo' shows the whole story on a throwaway
local repository and a development vault on 127.0.0.1; 'coffer dev' runs
such a vault for you to try the password commands.`,
		Version:       version(),
		SilenceErrors: true,
		SilenceUsage:  true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return cmd.Help()
		},
	}
	root.SetVersionTemplate("coffer {{.Version}}\n")
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return &usageError{err: err}
	})
	pf := root.PersistentFlags()
	pf.StringVar(&a.statePath, "state", "", "this device's state directory (env COFFER_STATE; default: the user config dir)")
	pf.StringVar(&a.repo, "repo", "", "repository URL: a directory, file:///dir or s3://… (env COFFER_REPO; default: the device's)")
	pf.BoolVar(&a.json, "json", false, "print one JSON object on stdout (errors too)")
	pf.BoolVarP(&a.quiet, "quiet", "q", false, "print no progress and no informational messages")
	root.PersistentPreRunE = func(cmd *cobra.Command, args []string) error {
		a.repo, _ = a.setting(cmd, "repo", "COFFER_REPO")
		a.statePath, _ = a.setting(cmd, "state", "COFFER_STATE")
		if a.statePath == "" {
			p, err := devicestate.DefaultPath()
			if err != nil {
				return fail("state", err)
			}
			a.statePath = p
		}
		return nil
	}
	root.AddCommand(
		a.initCommand(),
		a.backupCommand(),
		a.listCommand(),
		a.restoreCommand(),
		a.verifyCommand(),
		a.pruneCommand(),
		a.checkCommand(),
		a.repairCommand(),
		a.unlockCommand(),
		a.joinCommand(),
		a.versionCommand(),
		a.demoCommand(),
		a.statusCommand(),
		a.passwordCommand(),
		a.enableCommand(),
		a.disableCommand(),
		a.keyCommand(),
		a.vaultCommand(),
		a.relayCommand(),
		a.devCommand(),
	)
	return root
}

// args wraps a cobra argument check so its failure is a usage error.
func args(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := check(cmd, args); err != nil {
			return &usageError{err: fmt.Errorf("%s: %w", cmd.Name(), err)}
		}
		return nil
	}
}
