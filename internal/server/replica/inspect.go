package replica

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftwal "github.com/hashicorp/raft-wal"
	"go.etcd.io/bbolt"

	"github.com/cofferhq/coffer/internal/server/sealing"
)

// DirReport is what Inspect could read of a replica directory with one key.
// Each part counts the sealed items found and those that opened, and keeps
// the first error.
type DirReport struct {
	Key string // the key's Name

	CheckErr error // sealing.json

	Values, ValuesOpened int // state.db: accounts and member directory entries
	ValuesErr            error

	LogEntries, LogOpened int // raft/: log entries with data, and the stable store's current term
	LogErr                error

	Snapshots, SnapshotsOpened int // snapshots/: whole streams read to their authentic end
	SnapshotsErr               error
}

// Opened reports whether anything at all opened with the key.
func (d DirReport) Opened() bool {
	return d.CheckErr == nil || d.ValuesOpened > 0 || d.LogOpened > 0 || d.SnapshotsOpened > 0
}

func (d DirReport) String() string {
	return fmt.Sprintf("%s: check %v; values %d/%d (%v); log %d/%d (%v); snapshots %d/%d (%v)", d.Key, d.CheckErr,
		d.ValuesOpened, d.Values, d.ValuesErr, d.LogOpened, d.LogEntries, d.LogErr, d.SnapshotsOpened, d.Snapshots, d.SnapshotsErr)
}

// Inspect tries to open everything sealed in the stopped replica directory
// dir with key, as someone holding a copy of the disk and that key would:
// the sealing check, every state.db value, every Raft log entry and the
// stable store's term, every snapshot stream. It changes nothing but
// raft-wal's own bookkeeping (run it on a copy). For tests (the attack
// tests) and forensics.
func Inspect(dir string, key sealing.Key) DirReport {
	d := DirReport{Key: key.Name()}
	d.CheckErr = errors.New("no " + sealingCheckFile)
	if data, err := os.ReadFile(filepath.Join(dir, sealingCheckFile)); err == nil {
		var c sealingCheck
		if err := json.Unmarshal(data, &c); err != nil {
			d.CheckErr = err
		} else if sealed, err := base64.StdEncoding.DecodeString(c.Check); err != nil {
			d.CheckErr = err
		} else {
			_, d.CheckErr = key.Open(sealing.AAD(purposeCheck), sealed)
		}
	}

	ss := StateSealer(key)
	note := func(n, ok *int, first *error, err error) {
		*n++
		if err == nil {
			*ok++
		} else if *first == nil {
			*first = err
		}
	}
	if db, err := bbolt.Open(filepath.Join(dir, "state.db"), 0o600, &bbolt.Options{ReadOnly: true}); err != nil {
		d.ValuesErr = err
	} else {
		verr := db.View(func(tx *bbolt.Tx) error {
			for _, bucket := range []string{"records", "members"} {
				b := tx.Bucket([]byte(bucket))
				if b == nil {
					continue
				}
				b.ForEach(func(k, v []byte) error {
					sk := k
					if bucket == "members" {
						sk = append([]byte("member:"), k...)
					}
					_, err := ss.Open(sk, v)
					note(&d.Values, &d.ValuesOpened, &d.ValuesErr, err)
					return nil
				})
			}
			return nil
		})
		if verr != nil && d.ValuesErr == nil {
			d.ValuesErr = verr
		}
		db.Close()
	}

	wal, err := raftwal.Open(filepath.Join(dir, "raft"), raftwal.WithLogger(hclog.NewNullLogger()))
	if err != nil {
		d.LogErr = err
	} else {
		logs, stable, _ := sealedStores(key, wal, nil)
		first, _ := logs.FirstIndex()
		last, _ := logs.LastIndex()
		for i := first; i <= last && first > 0; i++ {
			var l raft.Log
			if err := wal.GetLog(i, &l); err != nil || len(l.Data) == 0 {
				continue
			}
			note(&d.LogEntries, &d.LogOpened, &d.LogErr, logs.GetLog(i, &l))
		}
		if v, err := wal.Get([]byte("CurrentTerm")); err == nil && len(v) > 0 {
			_, err := stable.Get([]byte("CurrentTerm"))
			note(&d.LogEntries, &d.LogOpened, &d.LogErr, err)
		}
		wal.Close()
	}

	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, retainSnapshots, hclog.NewNullLogger())
	if err != nil {
		d.SnapshotsErr = err
		return d
	}
	store := &sealedSnapshotStore{inner: snaps, k: key}
	list, _ := snaps.List()
	for _, m := range list {
		_, rc, err := store.Open(m.ID)
		if err == nil {
			_, err = io.Copy(io.Discard, rc)
			rc.Close()
		}
		note(&d.Snapshots, &d.SnapshotsOpened, &d.SnapshotsErr, err)
	}
	return d
}
