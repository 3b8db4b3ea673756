package cli

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cofferhq/coffer/internal/atomicfile"
	"github.com/cofferhq/coffer/internal/server/devfleet"
	"github.com/cofferhq/coffer/internal/server/vault"
	"github.com/cofferhq/coffer/token"
)

// devTokenTTL is how long the tokens 'coffer dev' writes are valid;
// devRefresh how often it writes new ones while it runs.
const (
	devTokenTTL = time.Hour
	devRefresh  = 30 * time.Minute
)

func (a *app) devCommand() *cobra.Command {
	var dir, account, readyFile string
	var guessLimit uint32
	var replicas int
	cmd := &cobra.Command{
		Use:   "dev --dir DIR [--account NAME] [--replicas 1|3|5]",
		Short: "Run a development vault fleet and relay on 127.0.0.1",
		Long: `Dev runs a whole vault fleet on 127.0.0.1 for development: the key ceremony
(the first time), one vault replica and a relay, with cheap key stretching
allowed. Reusing DIR restarts the same fleet, with its accounts.

It writes DIR/env, shell lines that set COFFER_RELAY, COFFER_ACCOUNT,
COFFER_TOKEN, COFFER_FLEET, COFFER_FLEET_ROOT and COFFER_DEV_KSF=1 for the
account (default "dev"). In another shell:

    source DIR/env
    coffer init --password --repo /tmp/coffer-repo

The token in DIR/env is valid for 1 hour. While 'coffer dev' runs it writes
a fresh one every 30 minutes: source DIR/env again (or re-run 'coffer dev')
when the relay says the token expired.

It prints "coffer dev: ready" (and writes --ready-file, if given) once the
fleet serves, and runs until interrupted (SIGINT or SIGTERM).

--replicas 3 or 5 runs that many vault replicas instead, each a separate
'coffer vault serve --config FILE' child process, with Raft over mutual TLS
from the fleet CA and sealed disks (a key file per replica), so replicas
can be killed and restarted to try failures. DIR/env then also sets
COFFER_DEV_REPLICAS, COFFER_DEV_FLEET_CA (the fleet CA certificate the
replicas' https:// URLs use: curl --cacert) and COFFER_DEV_REPLICA_<i>_PID,
_URL and _RAFT (i from 1), and DIR/replicas.json lists each replica's id,
pid, url, raft address, data directory, config file, log
(DIR/replica-<id>.log) and the command line that restarts it (restart, for
a shell; restart_argv). 'coffer dev' logs a replica's exit but never
restarts it; on SIGINT or SIGTERM it stops the relay, then every replica
it started (SIGTERM, then SIGKILL after 15 s). A replica a script
restarted is the script's to stop. On Linux the replicas die with a killed
'coffer dev'. Keep a DIR's replica count: a 3-replica DIR cannot be reused
with 5.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir, _ = a.setting(cmd, "dir", "COFFER_DEV_DIR")
			if dir == "" {
				return usagef("dev: name a directory for the fleet with --dir DIR (or COFFER_DEV_DIR)")
			}
			if err := token.ValidSubject(account); err != nil {
				return usagef("dev: --account: %v", err)
			}
			if replicas != 1 && replicas != 3 && replicas != 5 {
				return usagef("dev: --replicas must be 1, 3 or 5")
			}
			abs, err := filepath.Abs(dir)
			if err != nil {
				return fail("dev", err)
			}
			if err := os.MkdirAll(abs, 0o700); err != nil {
				return fail("dev", err)
			}
			ctx := cmd.Context()
			a.tuneGC()
			if err := a.startPprof(a.newLogger(slog.LevelInfo)); err != nil {
				return err
			}
			if replicas > 1 {
				return a.runDevReplicas(ctx, abs, account, readyFile, replicas, guessLimit)
			}
			return a.runDevFleet(ctx, abs, account, readyFile, guessLimit)
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "dir", "", "directory for the fleet's keys and state (env COFFER_DEV_DIR)")
	f.StringVar(&account, "account", "dev", "the account the env file's token is for")
	f.StringVar(&readyFile, "ready-file", "", "write FILE (holding the env file's path) once the fleet serves")
	f.Uint32Var(&guessLimit, "guess-limit", 0, fmt.Sprintf("wrong guesses allowed for new registrations (default %d)", vault.DefaultGuessLimit))
	f.IntVar(&replicas, "replicas", 1, "vault replicas: 1 (in this process), or 3 or 5 (child processes, mutual TLS)")
	return cmd
}

// runDevFleet is 'coffer dev' with its one replica in this process.
func (a *app) runDevFleet(ctx context.Context, abs, account, readyFile string, guessLimit uint32) error {
	f, err := devfleet.Start(ctx, devfleet.Options{Dir: abs, GuessLimit: guessLimit, Pacing: &devfleet.DevPacing, Logger: a.newLogger(slog.LevelWarn)})
	if err != nil {
		return fail("dev", err)
	}
	closed := false
	defer func() {
		if !closed {
			f.Close()
		}
	}()
	envFile := filepath.Join(abs, "env")
	exp, err := writeDevEnv(f, envFile, account)
	if err != nil {
		return fail("dev", err)
	}
	if a.json {
		if err := a.printJSON(map[string]any{
			"ready": true, "dir": abs, "env": envFile, "relay": f.RelayURL, "vault": f.VaultURL,
			"account": account, "bundle": f.BundlePath, "root_public": f.RootPublic, "token_expires": exp,
		}); err != nil {
			return err
		}
	} else {
		w := a.out()
		fmt.Fprintf(w, "Development vault fleet in %s (cheap key stretching allowed: never for real accounts).\n", abs)
		fmt.Fprintf(w, "  vault replica  %s\n  relay          %s\n  fleet bundle   %s\n  account        %s\n\n", f.VaultURL, f.RelayURL, f.BundlePath, account)
		fmt.Fprintf(w, "The settings for account %s are in %s; in another shell:\n\n", account, envFile)
		fmt.Fprintf(w, "    source %s\n    coffer init --password --repo /tmp/coffer-repo\n    coffer backup DIR...\n    coffer status\n\n", envFile)
		fmt.Fprintf(w, "The token there expires at %s; a fresh one is written every 30 minutes while this runs\n", when(exp))
		fmt.Fprintf(w, "(source the file again). Stop with Ctrl-C.\n")
		fmt.Fprintln(w, "coffer dev: ready")
	}
	return a.devUntilDone(ctx, readyFile, envFile,
		func() error { _, err := writeDevEnv(f, envFile, account); return err },
		func() error {
			closed = true
			return f.Close()
		})
}

// devUntilDone writes the ready file (if one was named), then refreshes
// the env file every devRefresh until ctx ends, and then stops the fleet.
func (a *app) devUntilDone(ctx context.Context, readyFile, envFile string, refresh, stop func() error) error {
	if readyFile != "" {
		if err := atomicfile.Replace(readyFile, []byte(envFile+"\n"), 0o600); err != nil {
			return fail("dev", err)
		}
	}
	t := time.NewTicker(devRefresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			if err := stop(); err != nil {
				return fail("dev", err)
			}
			if !a.json {
				fmt.Fprintln(a.out(), "coffer dev: stopped")
			}
			return nil
		case <-t.C:
			if err := refresh(); err != nil {
				fmt.Fprintf(a.Stderr, "coffer: dev: warning: refreshing %s: %v\n", envFile, err)
			}
		}
	}
}

// writeDevEnv writes the shell settings for account, with a fresh token,
// and returns when the token expires.
// extra settings (if any) are written too.
func writeDevEnv(f *devfleet.Fleet, path, account string, extra ...map[string]string) (time.Time, error) {
	env, err := f.Env(account, devTokenTTL)
	if err != nil {
		return time.Time{}, err
	}
	for _, m := range extra {
		maps.Copy(env, m)
	}
	env["COFFER_DEV_KSF"] = "1"
	exp := time.Now().Add(devTokenTTL)
	var sb strings.Builder
	fmt.Fprintf(&sb, "# Coffer development fleet ('coffer dev'), written %s.\n", time.Now().Format(time.RFC3339))
	fmt.Fprintf(&sb, "# The token expires at %s (1 hour): 'coffer dev' writes a fresh one every\n", exp.Format(time.RFC3339))
	fmt.Fprintf(&sb, "# 30 minutes while it runs; source this file again, or re-run 'coffer dev'.\n")
	fmt.Fprintf(&sb, "# COFFER_DEV_KSF=1: cheap key stretching, for this development fleet only.\n")
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&sb, "export %s=%s\n", k, shellQuote(env[k]))
	}
	return exp, atomicfile.Replace(path, []byte(sb.String()), 0o600)
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
