package cli

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/cofferhq/coffer/client"
	"github.com/cofferhq/coffer/internal/device/backupkey"
)

// The key flags, and opening the repository with them.

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

// keyForVault returns the key to prove to the vault: given with
// --key/--key-file/COFFER_KEY, else nil (the device's own). On a device
// that is not set up a key must be given.
func (a *app) keyForVault(op string, dev *client.Device, kf *keyFlags) (*backupkey.Key, error) {
	key, err := a.key(kf)
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
