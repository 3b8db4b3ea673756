// Package cli is the coffer command: a thin layer over package client that
// parses flags, draws progress, prints results for people or as JSON, and
// maps errors to the documented exit codes.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
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
	if ExitCode(err) == ExitUsage && !errors.Is(err, client.ErrMalformedKey) && !errors.Is(err, client.ErrWeakPassword) {
		err = &usageError{err: err, help: cmd.CommandPath() + " --help"}
	}
	return report(err, a.json, env.Stdout, env.Stderr)
}

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
		if a.repo == "" {
			a.repo = a.Getenv("COFFER_REPO")
		}
		if a.statePath == "" {
			a.statePath = a.Getenv("COFFER_STATE")
		}
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

// keyFlags are the ways to give an existing key.
type keyFlags struct {
	digits string
	file   string
}

func (k *keyFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&k.digits, "key", "", "the 64-digit key (visible to other users in ps: prefer --key-file or COFFER_KEY)")
	cmd.Flags().StringVar(&k.file, "key-file", "", "read the 64-digit key from FILE")
}

// key returns the key given on the command line or in COFFER_KEY, or nil
// if none was.
func (a *app) key(k *keyFlags) (*client.Key, error) {
	switch {
	case k.digits != "" && k.file != "":
		return nil, usagef("give the key with --key or with --key-file, not both")
	case k.digits != "":
		if !a.quiet {
			fmt.Fprintln(a.Stderr, "coffer: warning: a key given with --key is visible to other users of this machine (ps, shell history); prefer --key-file FILE or the COFFER_KEY environment variable")
		}
		key, err := client.ParseKey(k.digits)
		if err != nil {
			return nil, fmt.Errorf("--key: %w", err)
		}
		return key, nil
	case k.file != "":
		return client.ReadKeyFile(k.file)
	}
	if v := a.Getenv("COFFER_KEY"); v != "" {
		key, err := client.ParseKey(v)
		if err != nil {
			return nil, fmt.Errorf("COFFER_KEY: %w", err)
		}
		return key, nil
	}
	return nil, nil
}

// open opens the repository for op: the device's (with the key from the
// command line if one was given), or, on a device that is not set up, the
// one named by --repo with the given key.
func (a *app) open(ctx context.Context, op string, k *keyFlags) (*client.Repo, error) {
	key, err := a.key(k)
	if err != nil {
		return nil, fail(op, err)
	}
	dev := client.NewDevice(a.statePath)
	if dev.Initialized() {
		r, err := dev.Open(ctx, client.OpenOptions{Repository: a.repo, Key: key})
		return r, fail(op, err)
	}
	if a.repo == "" {
		return nil, &usageError{err: fmt.Errorf("%s: this device has no Coffer set up (state directory %s) and no repository was named: run 'coffer init --repo URL' to start, or give --repo URL (or COFFER_REPO) and the key (--key-file FILE or COFFER_KEY) to use an existing repository", op, a.statePath)}
	}
	if key == nil {
		return nil, &usageError{err: fmt.Errorf("%s: no key: this device has no Coffer set up (state directory %s), so give the 64-digit key with --key-file FILE or COFFER_KEY (or --key)", op, a.statePath)}
	}
	r, err := client.Open(ctx, a.repo, key)
	return r, fail(op, err)
}

// printJSON prints v as one JSON object on stdout.
func (a *app) printJSON(v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fail("json", err)
	}
	_, err = fmt.Fprintf(a.Stdout, "%s\n", b)
	return fail("output", err)
}

// say prints an informational line unless --quiet.
func (a *app) say(format string, args ...any) {
	if !a.quiet {
		fmt.Fprintf(a.Stdout, format+"\n", args...)
	}
}

func (a *app) versionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print Coffer's version",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if a.json {
				return a.printJSON(map[string]any{
					"version":            version(),
					"go":                 runtime.Version(),
					"platform":           runtime.GOOS + "/" + runtime.GOARCH,
					"format":             1,
					"repository_version": client.FormatVersion,
				})
			}
			fmt.Fprintf(a.Stdout, "coffer %s (%s, %s/%s; backup format 1)\n", version(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return nil
		},
	}
}
