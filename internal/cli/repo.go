package cli

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/cofferhq/coffer/client"
)

// The key flags, and opening the repository with them.

// addKeyFlags adds the flags that give an existing key; key reads them.
func addKeyFlags(cmd *cobra.Command) {
	cmd.Flags().String("key", "", "the 64-digit key (visible to other users in ps: prefer --key-file or COFFER_KEY)")
	cmd.Flags().String("key-file", "", "read the 64-digit key from FILE")
}

// keyGiven reports whether a key was given on the command line.
func (a *app) keyGiven(cmd *cobra.Command) bool { return a.given(cmd, "key", "key-file") }

// key returns the key given on the command line (--key or --key-file) or
// in COFFER_KEY, or nil if none was (the device's own, if any, is the
// saved value: client.Device.Open uses it).
func (a *app) key(cmd *cobra.Command) (*client.Key, error) {
	file, byFile := a.setting(cmd, "key-file", "")
	digits, o := a.lookup(cmd, "key", "COFFER_KEY")
	switch {
	case byFile && o == fromFlag:
		return nil, usagef("give the key with --key or with --key-file, not both")
	case o == fromFlag:
		if !a.quiet {
			fmt.Fprintln(a.Stderr, "coffer: warning: a key given with --key is visible to other users of this machine (ps, shell history); prefer --key-file FILE or the COFFER_KEY environment variable")
		}
		key, err := client.ParseKey(digits)
		if err != nil {
			return nil, fmt.Errorf("--key: %w", err)
		}
		return key, nil
	case byFile:
		return client.ReadKeyFile(file)
	case o == fromEnv:
		key, err := client.ParseKey(digits)
		if err != nil {
			return nil, fmt.Errorf("COFFER_KEY: %w", err)
		}
		return key, nil
	}
	return nil, nil
}

// keyForVault returns the key to prove to the vault: given with
// --key/--key-file/COFFER_KEY, else nil (the device's own). On a device
// that is not set up a key must be given.
func (a *app) keyForVault(cmd *cobra.Command, op string, dev *client.Device) (*client.Key, error) {
	key, err := a.key(cmd)
	if err != nil {
		return nil, fail(op, err)
	}
	if key == nil && !dev.Initialized() {
		return nil, usagef("%s: this device has no Coffer set up (state directory %s), so it holds no backup key; run it on a device that holds the key, or give the 64-digit key with --key-file FILE or COFFER_KEY", op, a.statePath)
	}
	return key, nil
}

// open opens the repository for op: the device's (with the key from the
// command line if one was given), or, on a device that is not set up, the
// one named by --repo with the given key.
func (a *app) open(cmd *cobra.Command, op string) (*client.Repo, error) {
	key, err := a.key(cmd)
	if err != nil {
		return nil, fail(op, err)
	}
	return a.openWithKey(cmd.Context(), op, key)
}

// openWithKey is open with the key already resolved (nil: the device's).
func (a *app) openWithKey(ctx context.Context, op string, key *client.Key) (*client.Repo, error) {
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
