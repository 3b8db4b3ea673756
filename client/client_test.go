package client

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cofferhq/coffer/storage"
)

func TestDeviceFlow(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(data, "a"), []byte("one"), 0o644)
	repoDir := filepath.Join(dir, "repo")

	dev := NewDevice(filepath.Join(dir, "state"))
	if dev.Initialized() {
		t.Fatal("initialized before Init")
	}
	res, err := dev.Init(ctx, repoDir)
	if err != nil {
		t.Fatal(err)
	}
	digits := res.Key.Digits()
	if _, err := dev.Init(ctx, repoDir); !errors.Is(err, ErrAlreadyInitialized) {
		t.Fatalf("second Init: %v", err)
	}
	r, err := dev.Open(ctx, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !r.Tracked() {
		t.Fatal("the device's own repository is not tracked")
	}
	for i := range 3 {
		os.WriteFile(filepath.Join(data, "a"), []byte(strings.Repeat("x", i+1)), 0o644)
		if _, err := r.Backup(ctx, []string{data}, BackupOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	r.Close()
	cfg, err := dev.Config()
	if err != nil || cfg.LastGeneration != 3 || cfg.Repository != repoDir {
		t.Fatalf("config %+v, %v", cfg, err)
	}

	// A new device with only the key joins, then sees a rollback.
	key, err := ParseKey(digits)
	if err != nil {
		t.Fatal(err)
	}
	other := NewDevice(filepath.Join(dir, "state2"))
	jr, err := other.Join(ctx, repoDir, key)
	if err != nil {
		t.Fatal(err)
	}
	jr.Close()
	if c, _ := other.Config(); c.LastGeneration != 3 {
		t.Fatalf("joined device saw %d", c.LastGeneration)
	}
	if err := os.Remove(filepath.Join(repoDir, "manifests", "00000000000000000003")); err != nil {
		t.Fatal(err)
	}
	r, err = dev.Open(ctx, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	_, err = r.Generations(ctx)
	if !errors.Is(err, ErrRollback) || !errors.Is(err, ErrIntegrity) {
		t.Fatalf("Generations after a rollback: %v", err)
	}
	if _, err := r.Restore(ctx, 0, filepath.Join(dir, "out"), RestoreOptions{}); !errors.Is(err, ErrRollback) {
		t.Fatalf("Restore after a rollback: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "out")); err == nil {
		t.Fatal("a refused restore wrote its target")
	}
	// Without state, nothing to compare with.
	nr, err := Open(ctx, repoDir, key)
	if err != nil {
		t.Fatal(err)
	}
	defer nr.Close()
	if gens, err := nr.Generations(ctx); err != nil || len(gens) != 2 {
		t.Fatalf("stateless Generations: %v %v", gens, err)
	}
	// A wrong key.
	if _, err := Open(ctx, repoDir, NewKey()); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("wrong key: %v", err)
	}
	// No repository: nothing created by looking.
	missing := filepath.Join(dir, "missing")
	if _, err := Open(ctx, missing, key); !errors.Is(err, ErrNoRepository) {
		t.Fatalf("missing: %v", err)
	}
	if _, err := os.Stat(missing); err == nil {
		t.Fatal("Open created a directory")
	}
}

func TestKeyFile(t *testing.T) {
	dir := t.TempDir()
	k := NewKey()
	p := filepath.Join(dir, "k")
	if err := WriteKeyFile(p, k, "a comment"); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode())
	}
	if err := WriteKeyFile(p, NewKey()); err == nil {
		t.Fatal("overwrote a key file")
	}
	got, err := ReadKeyFile(p)
	if err != nil || !got.Equal(k) {
		t.Fatalf("ReadKeyFile: %v", err)
	}
	// The state's own key file format, and bare digits.
	os.WriteFile(filepath.Join(dir, "s"), []byte("coffer backup key v1\n"+strings.ReplaceAll(k.Digits(), " ", "")+"\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "b"), []byte(strings.ToUpper(k.Digits())), 0o600)
	for _, n := range []string{"s", "b"} {
		if got, err := ReadKeyFile(filepath.Join(dir, n)); err != nil || !got.Equal(k) {
			t.Fatalf("ReadKeyFile(%s): %v", n, err)
		}
	}
	os.WriteFile(filepath.Join(dir, "bad"), []byte("1234\n"), 0o600)
	if _, err := ReadKeyFile(filepath.Join(dir, "bad")); !errors.Is(err, ErrMalformedKey) {
		t.Fatalf("bad key file: %v", err)
	}
}

// TestRepositoryURL: the location is parsed once, saved in canonical form
// (a plain path made absolute), and a location saved or given in another
// form still names the same repository.
func TestRepositoryURL(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	t.Chdir(dir)
	want := filepath.Join(dir, "repo")
	dev := NewDevice(filepath.Join(dir, "state"))
	res, err := dev.Init(ctx, " repo ")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Key.Zero()
	if cfg, err := dev.Config(); err != nil || res.Repository != want || cfg.Repository != want {
		t.Fatalf("Init saved %q (result %q), %v; want %q", cfg.Repository, res.Repository, err, want)
	}
	r, err := dev.Open(ctx, OpenOptions{Repository: "file://" + want})
	if err != nil {
		t.Fatal(err)
	}
	if !r.Tracked() || r.URL() != want {
		t.Fatalf("opened through a file URL: tracked %v, URL %q", r.Tracked(), r.URL())
	}
	r.Close()

	// A state that saved the location in another form (as an older Coffer
	// did for a file URL) still works, and still notices a replacement.
	cfg, _ := dev.Config()
	cfg.Repository = "file://" + want
	if err := dev.dir.Save(cfg); err != nil {
		t.Fatal(err)
	}
	if r, err = dev.Open(ctx, OpenOptions{}); err != nil || !r.Tracked() {
		t.Fatalf("Open with a file URL saved: %v", err)
	}
	r.Close()
	if err := os.RemoveAll(want); err != nil {
		t.Fatal(err)
	}
	nr, err := Create(ctx, want, res.Key)
	if err != nil {
		t.Fatal(err)
	}
	nr.Close()
	for _, o := range []OpenOptions{{}, {Repository: "./repo"}} {
		if _, err := dev.Open(ctx, o); !errors.Is(err, ErrReplaced) || !errors.Is(err, ErrIntegrity) {
			t.Fatalf("Open(%+v) of a replaced repository: %v", o, err)
		}
	}

	for _, bad := range []string{"", "ftp://host/x", "file://relative", "rclone:", "backup:2024"} {
		if _, err := Open(ctx, bad, res.Key); !errors.Is(err, storage.ErrInvalidLocation) {
			t.Errorf("Open(%q): %v, want ErrInvalidLocation", bad, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "backup:2024")); err == nil {
		t.Error("Open of backup:2024 created a directory")
	}
}
