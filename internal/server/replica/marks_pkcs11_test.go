//go:build cgo

package replica

import (
	"path/filepath"
	"testing"

	"github.com/cofferhq/coffer/internal/server/sealing"
	"github.com/cofferhq/coffer/internal/server/sealing/pkcs11"
	"github.com/cofferhq/coffer/internal/server/sealing/pkcs11/softhsmtest"
)

// TestRollbackMarkToken: the rollback defence with the mark in a SoftHSM2
// token and the data sealed under a key the token wraps: an old copy of
// the directory restored is refused; a normal restart is fine.
func TestRollbackMarkToken(t *testing.T) {
	module := softhsmtest.Setup(t, "vault0")
	tok, err := pkcs11.GenerateKey(pkcs11.Config{Module: module, TokenLabel: "vault0", PIN: softhsmtest.PIN, KeyLabel: "coffer-replica-solo"})
	if err != nil {
		t.Fatal(err)
	}
	defer tok.Close()
	dk, err := sealing.CreateWrappedKey(tok.Key(), filepath.Join(t.TempDir(), "data.key"), nil)
	if err != nil {
		t.Fatal(err)
	}
	rollbackScenario(t, tok, dk)
}
