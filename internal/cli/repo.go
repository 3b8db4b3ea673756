package cli

import (
	"context"
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/cofferhq/coffer/client"
)

// The key flags, and opening the repository with them.

// addKeyFlags adds the flags that give an existing key; key reads them.
func addKeyFlags(cmd *cobra.Command) {
	cmd.Flags().String("key", "", "the 64-digit key (visible to other users in ps: prefer --key-file, COFFER_KEY_FILE or COFFER_KEY, or type it at the prompt)")
	cmd.Flags().String("key-file", "", "read the 64-digit key from FILE (env COFFER_KEY_FILE)")
}

// keyGiven reports whether a key was given on the command line.
func (a *app) keyGiven(cmd *cobra.Command) bool { return a.given(cmd, "key", "key-file") }

// key returns the key given on the command line (--key or --key-file) or
// in the environment (COFFER_KEY_FILE, COFFER_KEY), or nil if none was (the
// device's own, if any, is the saved value: client.Device.Open uses it).
func (a *app) key(cmd *cobra.Command) (*client.Key, error) {
	file, fo := a.lookup(cmd, "key-file", "COFFER_KEY_FILE")
	digits, o := a.lookup(cmd, "key", "COFFER_KEY")
	switch {
	case fo == fromFlag && o == fromFlag:
		return nil, usagef("give the key with --key or with --key-file, not both")
	case o == fromFlag:
		if !a.quiet {
			fmt.Fprintln(a.Stderr, "coffer: warning: a key given with --key is visible to other users of this machine (ps, shell history); prefer --key-file FILE, COFFER_KEY_FILE, COFFER_KEY, or typing it at the prompt")
		}
		key, err := client.ParseKey(digits)
		if err != nil {
			return nil, fmt.Errorf("--key: %w", err)
		}
		return key, nil
	case fo == fromFlag:
		return client.ReadKeyFile(file)
	case fo == fromEnv && o == fromEnv:
		return nil, usagef("both COFFER_KEY_FILE and COFFER_KEY are set: unset one of them")
	case fo == fromEnv:
		k, err := client.ReadKeyFile(file)
		if err != nil {
			return nil, fmt.Errorf("COFFER_KEY_FILE: %w", err)
		}
		return k, nil
	case o == fromEnv:
		key, err := client.ParseKey(digits)
		if err != nil {
			return nil, fmt.Errorf("COFFER_KEY: %w", err)
		}
		return key, nil
	}
	return nil, nil
}

// keyOrPrompt is key, and when no key was given and standard input is a
// terminal, the key typed at a prompt without echo; nil if none.
func (a *app) keyOrPrompt(cmd *cobra.Command, op string) (*client.Key, error) {
	key, err := a.key(cmd)
	if err != nil || key != nil {
		return key, err
	}
	f, ok := a.Stdin.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return nil, nil
	}
	fmt.Fprint(a.Stderr, "64-digit backup key (not shown as you type): ")
	b, err := term.ReadPassword(int(f.Fd()))
	fmt.Fprintln(a.Stderr)
	defer clear(b)
	if err != nil {
		return nil, fail(op, fmt.Errorf("reading the key: %w", err))
	}
	key, err = client.ParseKey(string(b))
	if err != nil {
		return nil, fail(op, fmt.Errorf("the key typed: %w", err))
	}
	return key, nil
}

// keyForVault returns the key to prove to the vault: given with
// --key/--key-file/COFFER_KEY, else nil (the device's own). On a device
// that is not set up a key must be given.
func (a *app) keyForVault(cmd *cobra.Command, op string, dev *client.Device) (*client.Key, error) {
	if err := dev.StateError(); err != nil {
		return nil, fail(op, err)
	}
	get := a.key
	if !dev.Initialized() {
		get = func(cmd *cobra.Command) (*client.Key, error) { return a.keyOrPrompt(cmd, op) }
	}
	key, err := get(cmd)
	if err != nil {
		return nil, fail(op, err)
	}
	if key == nil && !dev.Initialized() {
		return nil, usagef("%s: this device has no Coffer set up (state directory %s), so it holds no backup key; run it on a device that holds the key, or give the 64-digit key with --key-file FILE, COFFER_KEY_FILE or COFFER_KEY (or at the prompt)", op, a.statePath)
	}
	return key, nil
}

// open opens the repository for op: the device's (with the key from the
// command line if one was given), or, on a device that is not set up, the
// one named by --repo with the given key.
func (a *app) open(cmd *cobra.Command, op string) (*client.Repo, error) {
	dev, err := a.device(op)
	if err != nil {
		return nil, err
	}
	get := a.key
	if !dev.Initialized() && a.repo != "" {
		// A device that is not set up: ask for the key if none was given.
		get = func(cmd *cobra.Command) (*client.Key, error) { return a.keyOrPrompt(cmd, op) }
	}
	key, err := get(cmd)
	if err != nil {
		return nil, fail(op, err)
	}
	return a.openWithKey(cmd.Context(), op, key)
}

// device returns this device, failing if its state directory is there but
// cannot be read (rather than calling it "not set up").
func (a *app) device(op string) (*client.Device, error) {
	dev := client.NewDevice(a.statePath)
	if err := dev.StateError(); err != nil {
		return nil, fail(op, err)
	}
	return dev, nil
}

// openWithKey is open with the key already resolved (nil: the device's).
func (a *app) openWithKey(ctx context.Context, op string, key *client.Key) (*client.Repo, error) {
	dev, err := a.device(op)
	if err != nil {
		return nil, err
	}
	if dev.Initialized() {
		r, err := dev.Open(ctx, client.OpenOptions{Repository: a.repo, Key: key})
		return r, fail(op, err)
	}
	if a.repo == "" {
		return nil, &usageError{err: fmt.Errorf("%s: this device has no Coffer set up (state directory %s) and no repository was named: run 'coffer init --repo URL' to start, 'coffer join --repo URL' to carry on backing up to an existing repository, or give --repo URL (or COFFER_REPO) and the key (--key-file FILE, COFFER_KEY_FILE or COFFER_KEY) to use an existing repository once", op, a.statePath)}
	}
	if key == nil {
		return nil, &usageError{err: fmt.Errorf("%s: no key: this device has no Coffer set up (state directory %s), so give the 64-digit key with --key-file FILE, COFFER_KEY_FILE or COFFER_KEY, or type it at the prompt (standard input a terminal); to set this device up to go on backing up to that repository, run 'coffer join --repo URL' (with the key, or --password)", op, a.statePath)}
	}
	r, err := client.Open(ctx, a.repo, key)
	return r, fail(op, err)
}
