package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// The committed vectors are exactly what the generator writes.
func TestVectorsUpToDate(t *testing.T) {
	dir := t.TempDir()
	if err := Generate(dir); err != nil {
		t.Fatal(err)
	}
	const committed = "../../device/container/testdata"
	fresh, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, e := range fresh {
		names[e.Name()] = true
		want, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(committed, e.Name()))
		if err != nil {
			t.Errorf("%s: %v (run go run ./internal/cmd/vectors -out container/testdata)", e.Name(), err)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from what the generator writes now", e.Name())
		}
	}
	old, err := os.ReadDir(committed)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range old {
		if !e.IsDir() && !names[e.Name()] {
			t.Errorf("%s: committed, but no longer generated", e.Name())
		}
	}
	// Twice the same.
	dir2 := t.TempDir()
	if err := Generate(dir2); err != nil {
		t.Fatal(err)
	}
	for name := range names {
		a, _ := os.ReadFile(filepath.Join(dir, name))
		b, _ := os.ReadFile(filepath.Join(dir2, name))
		if !bytes.Equal(a, b) {
			t.Errorf("%s: two runs differ", name)
		}
	}
}
