package state

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/cofferhq/coffer/backupkey"
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
