package keyfile

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cofferhq/coffer/internal/server/sealing"
)

func TestCreateLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys", "sealing.key")
	k, err := Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode: %v %v", fi.Mode(), err)
	}
	if _, err := Create(path); !errors.Is(err, ErrExists) {
		t.Fatalf("overwrite: %v", err)
	}
	sealed, _ := k.Seal([]byte("aad"), []byte("value"))
	k2, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if k2.ID() != k.ID() || !strings.Contains(k2.Name(), path) {
		t.Fatalf("%s vs %s", k2.Name(), k.Name())
	}
	if got, err := k2.Open([]byte("aad"), sealed); err != nil || string(got) != "value" {
		t.Fatal(err)
	}
	// Another key file does not open it.
	other, err := Create(filepath.Join(t.TempDir(), "other.key"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Open([]byte("aad"), sealed); !errors.Is(err, sealing.ErrAuthentication) {
		t.Fatal(err)
	}
	var f file
	raw, _ := os.ReadFile(path)
	if err := json.Unmarshal(raw, &f); err != nil || f.Version != 1 || f.KeyID != k.ID() {
		t.Fatalf("%s", raw)
	}
}

func TestLoadRefuses(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "k")
	if _, err := Create(path); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(path)
	write := func(name string, data []byte, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, mode)
		return p
	}
	for name, c := range map[string]struct {
		data []byte
		mode os.FileMode
		want string
	}{
		"readable": {raw, 0o644, "chmod 600"},
		"damaged":  {raw[:20], 0o600, "damaged"},
		"version":  {bytes.Replace(raw, []byte(`"coffer_sealing_key": 1`), []byte(`"coffer_sealing_key": 2`), 1), 0o600, "version 2"},
		"key id":   {bytes.Replace(raw, []byte(`"key_id": "`), []byte(`"key_id": "00`), 1), 0o600, "does not match"},
		"short":    {[]byte(`{"coffer_sealing_key":1,"key_id":"x","key":"AAAA"}`), 0o600, "not 32 bytes"},
	} {
		_, err := Load(write(name, c.data, c.mode))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", name, err, c.want)
		}
	}
	if _, err := Load(filepath.Join(dir, "missing")); err == nil {
		t.Error("missing file loaded")
	}
}
