package memory

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/cofferhq/coffer/storage"
	"github.com/cofferhq/coffer/storage/storagetest"
)

// TestDriveStandInConformance: with no lag the stand-in keeps the common
// contract (it claims no AtomicCreate, so that test is skipped).
func TestDriveStandInConformance(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Backend { return NewDriveStandIn(0) })
}

// TestDriveStandInDuplicates: two racing PutIfAbsent calls of one name
// both succeed and leave two files of that name, both listed — the hazard
// the repository's commit lock exists for.
func TestDriveStandInDuplicates(t *testing.T) {
	d := NewDriveStandIn(0)
	var wg sync.WaitGroup
	errs := make([]error, 2)
	start := make(chan struct{})
	for i := range 2 {
		wg.Go(func() {
			<-start
			errs[i] = d.PutIfAbsent(context.Background(), "manifests/1", bytes.NewReader([]byte{byte(i)}), 1)
		})
	}
	close(start)
	wg.Wait()
	if errs[0] != nil || errs[1] != nil {
		t.Fatalf("racing PutIfAbsent: %v, %v; want both to succeed, as on Drive", errs[0], errs[1])
	}
	if n := d.Copies("manifests/1"); n != 2 {
		t.Fatalf("Copies = %d, want 2", n)
	}
	listed := 0
	d.List(context.Background(), "manifests/", func(storage.ObjectInfo) error { listed++; return nil })
	if listed != 2 {
		t.Fatalf("List reported %d entries, want the name twice", listed)
	}
}

// TestDriveStandInLag: a new file is not found until the lag has passed,
// and a deleted one is still listed meanwhile but cannot be read.
func TestDriveStandInLag(t *testing.T) {
	const lag = 100 * time.Millisecond
	d := NewDriveStandIn(lag)
	ctx := context.Background()
	if err := d.Put(ctx, "a", bytes.NewReader([]byte("x")), 1); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Stat(ctx, "a"); !errors.Is(err, storage.ErrNotExist) {
		t.Fatalf("Stat at once: %v, want ErrNotExist (not listed yet)", err)
	}
	time.Sleep(lag + 20*time.Millisecond)
	if _, err := d.Stat(ctx, "a"); err != nil {
		t.Fatalf("Stat after the lag: %v", err)
	}
	d.Delete(ctx, "a")
	listed := 0
	d.List(ctx, "", func(storage.ObjectInfo) error { listed++; return nil })
	if listed != 1 {
		t.Fatalf("List right after Delete found %d, want the deleted file still listed", listed)
	}
	if _, err := d.Get(ctx, "a"); !errors.Is(err, storage.ErrNotExist) {
		t.Fatalf("Get of a deleted file: %v, want ErrNotExist", err)
	}
	if c := d.Capabilities(); c.AtomicCreate || !c.DuplicateNames || c.ListLag != lag {
		t.Fatalf("Capabilities = %+v", c)
	}
}
