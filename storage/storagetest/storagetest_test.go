package storagetest_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/cofferhq/coffer/storage"
	"github.com/cofferhq/coffer/storage/memory"
	"github.com/cofferhq/coffer/storage/storagetest"
)

// checkThenPut is a backend like a Drive-like store with no conditional
// write: PutIfAbsent looks, then writes, so two racing writers can both
// win. It honestly claims no AtomicCreate.
type checkThenPut struct{ *memory.Backend }

func (b checkThenPut) PutIfAbsent(ctx context.Context, name string, body io.ReaderAt, size int64) error {
	if _, err := b.Stat(ctx, name); err == nil {
		return fmt.Errorf("check-then-put: %q: %w", name, storage.ErrExist)
	} else if !errors.Is(err, storage.ErrNotExist) {
		return err
	}
	return b.Put(ctx, name, body, size)
}

func (checkThenPut) Capabilities() storage.Capabilities { return storage.Capabilities{} }

// A backend without AtomicCreate passes the suite: the race test is
// skipped, the sequential create-once rules still hold.
func TestNonAtomicBackendPasses(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Backend { return checkThenPut{memory.New()} })
}
