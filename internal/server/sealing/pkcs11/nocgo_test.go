//go:build !cgo

package pkcs11

import (
	"errors"
	"os"
	"testing"
)

func TestNoCgo(t *testing.T) {
	if _, err := Open(Config{Module: DefaultModule, TokenLabel: "t", KeyLabel: "k"}); !errors.Is(err, ErrNoCgo) {
		t.Fatalf("Open without cgo: %v", err)
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("built without cgo, so the PKCS#11 tests did not run: install a C compiler (.ci/install-softhsm.sh installs gcc)")
	}
	t.Skip("built without cgo: the PKCS#11 tests need cgo and SoftHSM2 (.ci/install-softhsm.sh)")
}
