package vault_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/cofferhq/coffer/internal/server/sealing/keyfile"
	"github.com/cofferhq/coffer/internal/server/vault"
)

// TestSealedShareFile: a share file sealed under one replica's key file
// ('coffer vault seal-share') holds no seed in the clear, opens to the same
// shares with that key only, and is refused without a key; sealing never
// overwrites.
func TestSealedShareFile(t *testing.T) {
	dir := t.TempDir()
	paths, err := vault.DealShares(filepath.Join(dir, "shares"), 3)
	if err != nil {
		t.Fatal(err)
	}
	own, err := keyfile.Create(filepath.Join(dir, "own.key"))
	if err != nil {
		t.Fatal(err)
	}
	other, err := keyfile.Create(filepath.Join(dir, "other.key"))
	if err != nil {
		t.Fatal(err)
	}
	sealed := filepath.Join(dir, "share-1.sealed")
	if err := vault.SealShareFile(paths[0], sealed, own); err != nil {
		t.Fatal(err)
	}
	plain, err := vault.LoadShareFile(paths[0])
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(sealed)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(data, []byte(`"seeds"`)) || bytes.Contains(data, plain.Seeds[0].Seed) {
		t.Fatal("the sealed share file shows its seeds")
	}
	got, err := vault.LoadShareFileSealed(sealed, own)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := plain.Share([]byte("acct\x00\x00\x00\x00\x00\x00\x00\x00\x01"), nil)
	b, _ := got.Share([]byte("acct\x00\x00\x00\x00\x00\x00\x00\x00\x01"), nil)
	if !got.Sealed || plain.Sealed {
		t.Fatal("Sealed does not say which file was sealed")
	}
	if got.Generation != 1 || got.Index != plain.Index || !bytes.Equal(a.Public(), b.Public()) {
		t.Fatal("the sealed share file opened to other shares")
	}
	if _, err := vault.LoadShareFileSealed(sealed, other); err == nil {
		t.Fatal("another replica's key opened the sealed share file")
	}
	if _, err := vault.LoadShareFile(sealed); !errors.Is(err, vault.ErrShareSealed) {
		t.Fatalf("the sealed share file without a key: %v", err)
	}
	if err := vault.SealShareFile(paths[1], sealed, own); err == nil {
		t.Fatal("seal-share overwrote a file")
	}
}
