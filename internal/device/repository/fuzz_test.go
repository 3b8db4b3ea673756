package repository

import (
	"bytes"
	"encoding/hex"
	"errors"
	"io"
	"testing"

	"github.com/cofferhq/coffer/internal/device/backupkey"
	"github.com/cofferhq/coffer/internal/device/container"
)

// FuzzManifest feeds arbitrary plaintext to the manifest parser (what a
// key holder with a modified client could commit): it must never panic,
// and every entry it accepts must be one a restore can write safely.
func FuzzManifest(f *testing.F) {
	var repoID [16]byte
	repoID[3] = 7
	hdr := `{"coffer_manifest":1,"repository":"` + hex.EncodeToString(repoID[:]) + `","paths":["a"],"stats":{"entries":2,"files":1,"dirs":1,"symlinks":0,"bytes":3,"pieces":1}}`
	id := bytes.Repeat([]byte("ab"), 32)
	good := hdr + "\n" +
		`{"path":"a","type":"dir","mode":493,"mtime":1}` + "\n" +
		`{"path":"a/b","type":"file","mode":420,"mtime":1,"size":3,"pieces":[["` + string(id) + `",3]]}` + "\n" +
		`{"end":{"entries":2,"files":1,"dirs":1,"symlinks":0,"bytes":3,"pieces":1}}` + "\n"
	f.Add([]byte(good))
	f.Add([]byte(hdr + "\n" + `{"path":"../x","type":"dir","mode":493,"mtime":1}` + "\n"))
	f.Add([]byte(hdr + "\n" + `{"path":"a","type":"symlink","mode":511,"mtime":1,"target":"/etc"}` + "\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		mr, err := parseManifest(bytes.NewReader(data), io.NopCloser(nil), 1, repoID)
		if err != nil {
			if !errors.Is(err, container.ErrIntegrity) && !errors.Is(err, container.ErrUnsupportedVersion) {
				t.Fatalf("header error of the wrong class: %v", err)
			}
			return
		}
		for range 10000 {
			e, err := mr.next()
			if err == io.EOF {
				return
			}
			if err != nil {
				if !errors.Is(err, container.ErrIntegrity) {
					t.Fatalf("entry error of the wrong class: %v", err)
				}
				return
			}
			if !isCleanRelative(e.Path) {
				t.Fatalf("accepted unsafe path %q", e.Path)
			}
		}
	})
}

// FuzzPackIndex feeds arbitrary plaintext to the pack and index parsers
// (what a key holder with a modified client could store): they must never
// panic, and every blob a pack walk accepts lies inside the pack.
func FuzzPackIndex(f *testing.F) {
	r := newRepository(nil, mustKey(), [16]byte{1}, 64<<10)
	good := []byte{packFormat, 0, 0, 0, 1}
	good = appendBlob(good, []byte("some data, some data, some data"), true)
	f.Add(good)
	f.Add(encodeIndex([]packRec{{blobs: []blobRec{{n: 3}}}}))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		decodeIndex(data)
		offs, err := packLayout(data)
		if err == nil {
			for _, o := range offs {
				if int(o)+blobHeader > len(data) {
					t.Fatalf("blob at %d beyond %d", o, len(data))
				}
			}
		}
		r.parsePack(data)
	})
}

func mustKey() *backupkey.Key { return backupkey.New() }
