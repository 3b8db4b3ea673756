package repository

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/cofferhq/coffer/internal/device/container"
)

// commitRaw commits a manifest whose entry lines are given verbatim, as a
// key holder with a modified client could.
func (f *fixture) commitRaw(lines []string, stats genStats) uint64 {
	f.t.Helper()
	return f.commitRawFormat(manifestFormat, lines, stats)
}

// commitRawFormat is commitRaw with a given manifest version.
func (f *fixture) commitRawFormat(format int, lines []string, stats genStats) uint64 {
	f.t.Helper()
	tmp, err := os.CreateTemp(f.t.TempDir(), "m")
	if err != nil {
		f.t.Fatal(err)
	}
	defer tmp.Close()
	eph := new([32]byte)
	rand.Read(eph[:])
	cw, _ := container.NewWriter(tmp, eph, container.Params{Kind: container.KindManifest})
	bw := bufio.NewWriter(cw)
	for _, l := range lines {
		bw.WriteString(l + "\n")
	}
	bw.Flush()
	cw.Close()
	hdr := &manifestHeader{Format: format, Repository: f.repo.ID(), Paths: []string{"x"}, Stats: stats}
	gens, _ := f.repo.manifestNumbers(context.Background())
	gen, err := f.repo.commit(context.Background(), hdr, tmp, eph, gens)
	if err != nil {
		f.t.Fatal(err)
	}
	return gen
}

func TestHostileManifestsWriteNothingOutside(t *testing.T) {
	cases := map[string]struct {
		lines []string
		stats genStats
	}{
		"dotdot":   {[]string{`{"path":"../evil","type":"dir","mode":493,"mtime":0}`}, genStats{Entries: 1, Dirs: 1}},
		"absolute": {[]string{`{"path":"/tmp/evil","type":"dir","mode":493,"mtime":0}`}, genStats{Entries: 1, Dirs: 1}},
		"through symlink": {[]string{
			`{"path":"x","type":"symlink","mode":511,"mtime":0,"target":"/tmp"}`,
			`{"path":"x/evil","type":"file","mode":420,"mtime":0}`,
		}, genStats{Entries: 2, Links: 1, Files: 1}},
		"file as dir": {[]string{
			`{"path":"x","type":"file","mode":420,"mtime":0}`,
			`{"path":"x/evil","type":"file","mode":420,"mtime":0}`,
		}, genStats{Entries: 2, Files: 2}},
		"out of order": {[]string{
			`{"path":"y","type":"dir","mode":493,"mtime":0}`,
			`{"path":"x","type":"dir","mode":493,"mtime":0}`,
		}, genStats{Entries: 2, Dirs: 2}},
		"duplicate": {[]string{
			`{"path":"x","type":"dir","mode":493,"mtime":0}`,
			`{"path":"x","type":"dir","mode":493,"mtime":0}`,
		}, genStats{Entries: 2, Dirs: 2}},
		"size mismatch":   {[]string{`{"path":"x","type":"file","mode":420,"mtime":0,"size":5}`}, genStats{Entries: 1, Files: 1, Bytes: 5}},
		"counts mismatch": {[]string{`{"path":"x","type":"dir","mode":493,"mtime":0}`}, genStats{Entries: 7, Dirs: 1}},
		"unknown field":   {[]string{`{"path":"x","type":"dir","mode":493,"mtime":0,"setuid_root":true}`}, genStats{Entries: 1, Dirs: 1}},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t)
			gen := f.commitRaw(c.lines, c.stats)
			out := filepath.Join(f.dir, "sub", "out")
			_, err := f.repo.Restore(context.Background(), gen, out, RestoreOptions{})
			if !errors.Is(err, container.ErrIntegrity) {
				t.Fatalf("restore: %v", err)
			}
			if _, err := os.Stat(out); !errors.Is(err, fs.ErrNotExist) {
				t.Fatal("target created")
			}
			for _, p := range []string{filepath.Join(f.dir, "sub", "evil"), filepath.Join(f.dir, "evil"), "/tmp/evil"} {
				if _, err := os.Lstat(p); err == nil {
					t.Fatalf("%s written", p)
				}
			}
			assertNoStaging(t, filepath.Join(f.dir, "sub"))
		})
	}
}
