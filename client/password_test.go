package client_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cofferhq/coffer/client"
	"github.com/cofferhq/coffer/internal/device/devicestate"
	"github.com/cofferhq/coffer/internal/device/repository"
	"github.com/cofferhq/coffer/internal/server/devfleet"
)

// TestPasswordFlow runs the device's side of password recovery against a
// development fleet on 127.0.0.1 (the test alone imports server code).
func TestPasswordFlow(t *testing.T) {
	ctx := context.Background()
	f, err := devfleet.Start(ctx, devfleet.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tok, err := f.Token("ana", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	vtok, err := f.VaultToken("ana", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	vs := client.VaultSettings{Relay: f.RelayURL, Account: "ana", Token: tok, VaultToken: vtok, Fleet: f.BundlePath, FleetRoot: f.RootPublic, InsecureDevKSF: true}
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	os.MkdirAll(data, 0o755)
	os.WriteFile(filepath.Join(data, "a"), []byte("hello"), 0o644)
	repo := filepath.Join(dir, "repo")
	pw := []byte("correct horse battery")

	dev := client.NewDevice(filepath.Join(dir, "state"))
	if _, err := dev.InitWithPassword(ctx, repo, []byte("short"), vs); !errors.Is(err, client.ErrWeakPassword) {
		t.Fatalf("short password: %v", err)
	}
	if _, err := os.Stat(repo); err == nil {
		t.Fatal("a refused InitWithPassword created the repository")
	}
	res, err := dev.InitWithPassword(ctx, repo, pw, vs)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Key.Zero()
	if res.Enrollment.GuessLimit != 10 || !dev.PasswordEnabled() {
		t.Fatalf("enrollment %+v, enabled %v", res.Enrollment, dev.PasswordEnabled())
	}
	v, err := dev.VaultConfig()
	if err != nil || v.Account != "ana" || v.Relay != f.RelayURL || !filepath.IsAbs(v.Fleet) || v.FleetRoot != f.RootPublic {
		t.Fatalf("saved settings %+v %v", v, err)
	}
	r, err := dev.Open(ctx, client.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Backup(ctx, []string{data}, repository.BackupOptions{}); err != nil {
		t.Fatal(err)
	}
	r.Close()

	// The local check spends no guess.
	if !dev.HasPasswordVerifier() {
		t.Fatal("no password verifier after InitWithPassword")
	}
	if err := dev.CheckPassword(pw); err != nil {
		t.Fatal(err)
	}
	if err := dev.CheckPassword([]byte("not the password")); !errors.Is(err, client.ErrPasswordMismatch) {
		t.Fatalf("wrong password checked: %v", err)
	}

	// A second device for the same account cannot set up another key.
	other := client.NewDevice(filepath.Join(dir, "state2"))
	if _, err := other.InitWithPassword(ctx, filepath.Join(dir, "repo2"), pw, vs); !errors.Is(err, client.ErrAccountInUse) {
		t.Fatalf("second InitWithPassword: %v", err)
	}
	if other.Initialized() {
		t.Fatal("a refused InitWithPassword set the device up")
	}

	// A new device: the settings (without the saved ones) and the password.
	if _, _, err := client.RecoverKey(ctx, vs, []byte("wrong password!")); !errors.Is(err, client.ErrWrongPassword) {
		t.Fatalf("wrong password: %v", err)
	}
	// Loaded settings carry the verified bundle: the file is not read again.
	copied := filepath.Join(dir, "bundle-copy.json")
	if b, err := os.ReadFile(f.BundlePath); err != nil || os.WriteFile(copied, b, 0o600) != nil {
		t.Fatal(err)
	}
	fromCopy := vs
	fromCopy.Fleet = copied
	loaded, err := fromCopy.Load()
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(copied)
	key, sess, err := client.RecoverKey(ctx, loaded, pw)
	if err != nil || !key.Equal(res.Key) || sess.FailedGuesses != 1 {
		t.Fatalf("recover: %v %+v", err, sess)
	}
	key.Zero()
	if _, _, err := client.RecoverKey(ctx, fromCopy, pw); !errors.Is(err, client.ErrVaultSettings) {
		t.Fatalf("unloaded settings without their bundle file: %v", err)
	}

	// Change, turn off, turn on.
	newPW := []byte("another good password")
	if _, err := dev.ChangePassword(ctx, vs, nil, newPW); err != nil {
		t.Fatal(err)
	}
	if err := dev.CheckPassword(newPW); err != nil {
		t.Fatalf("the verifier did not follow the change: %v", err)
	}
	if _, _, err := client.RecoverKey(ctx, vs, pw); !errors.Is(err, client.ErrWrongPassword) {
		t.Fatalf("old password after change: %v", err)
	}
	if err := dev.DisablePassword(ctx, vs, nil); err != nil {
		t.Fatal(err)
	}
	if dev.PasswordEnabled() {
		t.Fatal("enabled after DisablePassword")
	}
	if err := dev.CheckPassword(newPW); !errors.Is(err, client.ErrNoPasswordVerifier) || dev.HasPasswordVerifier() {
		t.Fatalf("verifier after disable: %v", err)
	}
	if _, err := dev.ChangePassword(ctx, vs, nil, newPW); !errors.Is(err, client.ErrNoPassword) {
		t.Fatalf("change after disable: %v", err)
	}
	st, err := client.VaultStatus(ctx, vs)
	if err != nil || st.Registered || !st.Disabled {
		t.Fatalf("status after disable: %+v %v", st, err)
	}
	if _, err := dev.EnablePassword(ctx, vs, nil, pw); err != nil {
		t.Fatal(err)
	}
	if key, _, err := client.RecoverKey(ctx, vs, pw); err != nil || !key.Equal(res.Key) {
		t.Fatalf("recover after enable: %v", err)
	}

	// A token for another account is caught before anything is sent.
	tok2, _ := f.Token("bea", time.Hour)
	bad := vs
	bad.Token = tok2
	if _, err := client.VaultStatus(ctx, bad); !errors.Is(err, client.ErrVaultSettings) {
		t.Fatalf("a token for another account: %v", err)
	}
}

func TestPasswordVerifier(t *testing.T) {
	for _, dev := range []bool{true, false} {
		v, err := client.NewPasswordVerifier([]byte("pässword ünicode"), dev)
		if err != nil {
			t.Fatal(err)
		}
		if v.Algorithm != "argon2id" || len(v.Salt) != 16 || len(v.Hash) != 32 {
			t.Fatalf("verifier %+v", v)
		}
		if !dev && (v.Time < 2 || v.MemoryKiB < 19*1024) {
			t.Fatalf("weak parameters for real use: %+v", v)
		}
		d := &devicestate.Dir{Path: t.TempDir()}
		if err := d.SavePasswordVerifier(v); err != nil {
			t.Fatal(err)
		}
		w, err := d.LoadPasswordVerifier()
		if err != nil || string(w.Hash) != string(v.Hash) {
			t.Fatalf("round trip: %v", err)
		}
	}
}
