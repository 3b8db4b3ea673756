//go:build cgo

package replica

import (
	"bytes"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cofferhq/coffer/internal/server/sealing"
	"github.com/cofferhq/coffer/internal/server/sealing/pkcs11"
	"github.com/cofferhq/coffer/internal/server/sealing/pkcs11/softhsmtest"
)

// The PKCS#11 path end to end with SoftHSM2: a non-extractable key in the
// token wraps the replica's data key; the replica seals everything with it;
// restart with the token works; another token cannot unwrap the data key,
// and a replica given another token's data key refuses the directory.
func TestSealedReplicaWithToken(t *testing.T) {
	module := softhsmtest.Setup(t, "vault0", "vault1")
	cfg0 := pkcs11.Config{Module: module, TokenLabel: "vault0", PIN: softhsmtest.PIN, KeyLabel: "coffer-replica-solo"}
	tok, err := pkcs11.GenerateKey(cfg0)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { tok.Close() }()
	keyPath := filepath.Join(t.TempDir(), "keys", "data.key") // beside, not inside, the data directory
	dk, err := sealing.CreateWrappedKey(tok.Key(), keyPath, nil)
	if err != nil {
		t.Fatal(err)
	}

	logger, _ := testLogger(t)
	dir := t.TempDir()
	cfg := fastConfig(t, "solo", dir, logger)
	cfg.Bootstrap = true
	cfg.SealingKey = dk
	r, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	waitLeader(t, r)
	s := fillReplica(t, r)
	st := r.Stats()
	r.Close()
	if leaks := findLeaks(t, dir, s); len(leaks) > 0 {
		t.Fatalf("leaks:\n%s", strings.Join(leaks, "\n"))
	}

	// The high-water mark goes to the token; it cannot go back.
	if err := tok.WriteMark(sealing.Mark{Index: st.FSMIndex, Term: st.Term}); err != nil {
		t.Fatal(err)
	}
	if err := tok.WriteMark(sealing.Mark{Index: st.FSMIndex - 1, Term: st.Term}); !errors.Is(err, sealing.ErrRollback) {
		t.Fatalf("lower mark: %v", err)
	}

	// Restart: a new process opens the token and unwraps the data key.
	tok.Close()
	tok, err = pkcs11.Open(cfg0)
	if err != nil {
		t.Fatal(err)
	}
	cfg.SealingKey, err = sealing.LoadWrappedKey(tok.Key(), keyPath)
	if err != nil {
		t.Fatal(err)
	}
	r, err = Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	waitLeader(t, r)
	acc, err := r.Lookup(s.ids[2])
	if err != nil || !bytes.Equal(acc.Record.WrappedKey, s.records[2].WrappedKey) {
		t.Fatalf("after restart: %v %v", acc, err)
	}
	r.Close()
	if m, err := tok.ReadMark(); err != nil || m.Index != st.FSMIndex {
		t.Fatalf("mark %v %v", m, err)
	}

	// Another token: cannot unwrap this replica's data key, and its own
	// data key does not open the directory.
	other, err := pkcs11.GenerateKey(pkcs11.Config{Module: module, TokenLabel: "vault1", PIN: softhsmtest.PIN, KeyLabel: "coffer-replica-solo"})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if _, err := sealing.LoadWrappedKey(other.Key(), keyPath); !errors.Is(err, sealing.ErrAuthentication) {
		t.Fatalf("another token unwrapped the data key: %v", err)
	}
	otherKey, err := sealing.CreateWrappedKey(other.Key(), filepath.Join(t.TempDir(), "data.key"), nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.SealingKey = otherKey
	if r, err := Open(cfg); err == nil {
		r.Close()
		t.Fatal("opened with another token's data key")
	} else if !errors.Is(err, sealing.ErrAuthentication) || !strings.Contains(err.Error(), `token "vault1"`) {
		t.Fatalf("other token: %v", err)
	} else {
		t.Logf("other token: %v", err)
	}
}
