package devicestate

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/cofferhq/coffer/internal/device/backupkey"
)

func TestRoundTrip(t *testing.T) {
	d, err := Open(filepath.Join(t.TempDir(), "st"))
	if err != nil {
		t.Fatal(err)
	}
	if d.Exists() {
		t.Fatal("exists before init")
	}
	if _, err := d.Load(); !errors.Is(err, ErrNotInitialized) {
		t.Fatalf("Load before init: %v", err)
	}
	k := backupkey.New()
	if err := d.SaveKey(k); err != nil {
		t.Fatal(err)
	}
	if err := d.SaveKey(backupkey.New()); err == nil {
		t.Fatal("overwrote a different key")
	}
	if err := d.SaveKey(k); err != nil {
		t.Fatalf("saving the same key again: %v", err)
	}
	k2, err := d.LoadKey()
	if err != nil || !k2.Equal(k) {
		t.Fatalf("LoadKey: %v", err)
	}
	c := &Config{Repository: "/x", LastGeneration: 7}
	if err := d.Save(c); err != nil {
		t.Fatal(err)
	}
	c2, err := d.Load()
	if err != nil || c2.Repository != "/x" || c2.LastGeneration != 7 || c2.Version != Version {
		t.Fatalf("Load = %+v, %v", c2, err)
	}
	for _, f := range []string{configFile, keyFile} {
		st, err := os.Stat(filepath.Join(d.Path, f))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: mode %v, %v", f, st.Mode(), err)
		}
	}
	st, _ := os.Stat(d.Path)
	if st.Mode().Perm() != 0o700 {
		t.Fatalf("dir mode %v", st.Mode())
	}
}

func TestRefusesNewerVersion(t *testing.T) {
	d, _ := Open(t.TempDir())
	os.WriteFile(filepath.Join(d.Path, configFile), []byte(`{"version":2}`), 0o600)
	if _, err := d.Load(); err == nil {
		t.Fatal("accepted version 2")
	}
}

func TestPasswordVerifierFile(t *testing.T) {
	d, err := Open(filepath.Join(t.TempDir(), "st"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.LoadPasswordVerifier(); !errors.Is(err, ErrNoPasswordVerifier) {
		t.Fatalf("no verifier: %v", err)
	}
	v := &PasswordVerifier{Algorithm: "argon2id", Time: 1, MemoryKiB: 64, Threads: 1, Salt: []byte("0123456789abcdef"), Hash: []byte("h")}
	if err := d.SavePasswordVerifier(v); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(d.Path, verifierFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("verifier file: %v %v", err, fi.Mode())
	}
	w, err := d.LoadPasswordVerifier()
	if err != nil || string(w.Salt) != string(v.Salt) || w.MemoryKiB != 64 || w.Version != Version {
		t.Fatalf("round trip: %+v %v", w, err)
	}
	if err := d.RemovePasswordVerifier(); err != nil {
		t.Fatal(err)
	}
	if err := d.RemovePasswordVerifier(); err != nil {
		t.Fatalf("removing twice: %v", err)
	}
	if _, err := d.LoadPasswordVerifier(); !errors.Is(err, ErrNoPasswordVerifier) {
		t.Fatalf("after remove: %v", err)
	}
	// The vault settings round-trip in the configuration.
	c := &Config{Repository: "/r", Vault: &Vault{Relay: "http://x", Account: "a", Fleet: "/b.json", FleetRoot: "coffer-fleet-root:x", Enabled: true, Epoch: 3}}
	if err := d.Save(c); err != nil {
		t.Fatal(err)
	}
	got, err := d.Load()
	if err != nil || got.Vault == nil || *got.Vault != *c.Vault {
		t.Fatalf("vault settings: %+v %v", got, err)
	}
}
