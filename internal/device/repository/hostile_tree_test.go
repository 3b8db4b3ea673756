package repository

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// hostileTree builds, relative to directory descriptors (so that paths
// longer than PATH_MAX can be made), a tree with every awkward thing a
// Unix file system can hold. It returns the entry paths (relative to
// root) that the backup is expected to skip, and the one that changes
// while being read.
type hostileTree struct {
	t        *testing.T
	root     string
	skipped  []string // relative paths expected in SkippedEntries
	changing string   // grows while being read: content not compared
	failing  string   // read fails midway (testFault)
	noOpen   []string // open fails (testFault)
}

func mkdirat(t *testing.T, dirfd int, name string, mode uint32) int {
	t.Helper()
	if err := unix.Mkdirat(dirfd, name, mode); err != nil {
		t.Fatalf("mkdir %q: %v", name, err)
	}
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	return fd
}

func writeAt(t *testing.T, dirfd int, name string, data []byte, mode uint32) {
	t.Helper()
	fd, err := unix.Openat(dirfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL, mode)
	if err != nil {
		t.Fatalf("create %q: %v", name, err)
	}
	f := os.NewFile(uintptr(fd), name)
	f.Write(data)
	f.Chmod(os.FileMode(mode & 0o777))
	f.Close()
}

func buildHostileTree(t *testing.T, root string) *hostileTree {
	h := &hostileTree{t: t, root: root}
	os.MkdirAll(root, 0o755)
	rfd, _ := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	defer unix.Close(rfd)

	// Every byte 0x01–0xFF (but '/') in some name.
	names := mkdirat(t, rfd, "names", 0o755)
	var cur []byte
	for c := 1; c < 256; c++ {
		if c == '/' {
			continue
		}
		cur = append(cur, byte(c))
		if len(cur) == 16 || c == 255 {
			writeAt(t, names, "n"+string(cur), []byte{byte(c)}, 0o644)
			cur = nil
		}
	}
	// Names differing only in invalid UTF-8, escapes, backslashes, 255 bytes.
	for i, n := range []string{"x\xff", "x\xfe", "x\xc3", "x\xc3\xa9", "x\uFFFD", "%41", "A", "%", "%%", "%zz",
		`back\slash`, `\`, `\\`, strings.Repeat("L", 255), strings.Repeat("\xfe", 255), " lead", "trail ", "new\nline", "\x01"} {
		writeAt(t, names, n, []byte(fmt.Sprint("content ", i)), 0o644)
	}
	unix.Symlinkat("target\xff/with\\odd%bytes", names, "link\xff")
	unix.Symlinkat("../nowhere", names, "dangling")
	unix.Close(names)

	// A path longer than PATH_MAX.
	fd := mkdirat(t, rfd, "deep", 0o755)
	for range 25 {
		nfd := mkdirat(t, fd, strings.Repeat("d", 200), 0o755)
		unix.Close(fd)
		fd = nfd
	}
	writeAt(t, fd, "leaf", []byte("deep leaf"), 0o644)
	unix.Close(fd)

	// Special and odd files.
	sp := mkdirat(t, rfd, "special", 0o755)
	sparse, _ := unix.Openat(sp, "sparse", unix.O_WRONLY|unix.O_CREAT, 0o644)
	unix.Pwrite(sparse, []byte("head"), 0)
	unix.Pwrite(sparse, []byte("tail"), 16<<20-4)
	unix.Close(sparse)
	writeAt(t, sp, "original", randBytes(70<<10), 0o644)
	unix.Linkat(sp, "original", sp, "hardlink", 0)
	unix.Mkfifoat(sp, "fifo", 0o600)
	writeAt(t, sp, "setuid", []byte("#!/bin/sh\n"), 0o755)
	unix.Fchmodat(sp, "setuid", 0o4755|unix.S_ISGID, 0)
	writeAt(t, sp, "empty", nil, 0o600)
	e := mkdirat(t, sp, "emptydir", 0o700)
	unix.Close(e)
	ro := mkdirat(t, sp, "readonly", 0o755)
	writeAt(t, ro, "inside", []byte("in a read-only dir"), 0o444)
	unix.Fchmod(ro, 0o555)
	unix.Close(ro)
	unix.Close(sp)
	l, err := net.Listen("unix", filepath.Join(root, "special", "sock"))
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	h.skipped = append(h.skipped, "special/sock")

	// Faults: unreadable file and directory, a read error midway, a file
	// growing while read.
	fl := mkdirat(t, rfd, "faults", 0o755)
	writeAt(t, fl, "unreadable", []byte("secret"), 0o644)
	u := mkdirat(t, fl, "unreadabledir", 0o755)
	writeAt(t, u, "x", []byte("x"), 0o644)
	unix.Close(u)
	writeAt(t, fl, "midway", randBytes(200<<10), 0o644)
	writeAt(t, fl, "growing", randBytes(100<<10), 0o644)
	unix.Close(fl)
	h.noOpen = []string{"faults/unreadable", "faults/unreadabledir"}
	h.failing = "faults/midway"
	h.changing = "faults/growing"
	h.skipped = append(h.skipped, h.noOpen...)
	h.skipped = append(h.skipped, h.failing)
	return h
}

// fault is the testFault for the tree, whose backup root has base name
// base.
func (h *hostileTree) fault(base string) func(op, rel string, off int64) error {
	return func(op, rel string, off int64) error {
		r := strings.TrimPrefix(rel, base+"/")
		switch {
		case op == "open" && (r == h.noOpen[0] || r == h.noOpen[1]):
			return syscall.EACCES
		case op == "read" && r == h.failing && off >= 64<<10:
			return syscall.EIO
		case op == "read" && r == h.changing && off > 0 && off < 200<<10:
			f, _ := os.OpenFile(filepath.Join(h.root, filepath.FromSlash(h.changing)), os.O_WRONLY|os.O_APPEND, 0)
			f.Write(bytes.Repeat([]byte("more"), 1024))
			f.Close()
		}
		return nil
	}
}

// digestTree describes every entry under root (type, mode, size, content
// hash, mtime, link target), walking with descriptors.
func digestTree(t *testing.T, root string, skip map[string]bool, noContent string, stripSetid bool) []string {
	t.Helper()
	var out []string
	var walk func(dirfd int, rel string)
	walk = func(dirfd int, rel string) {
		d := os.NewFile(uintptr(dirfd), rel)
		names, err := d.Readdirnames(-1)
		if err != nil {
			t.Fatal(err)
		}
		sort.Strings(names)
		for _, n := range names {
			p := n
			if rel != "" {
				p = rel + "/" + n
			}
			if skip[p] {
				continue
			}
			var st unix.Stat_t
			if err := unix.Fstatat(dirfd, n, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				t.Fatal(err)
			}
			mode := st.Mode
			if stripSetid && mode&unix.S_IFMT == unix.S_IFREG {
				mode &^= unix.S_ISUID | unix.S_ISGID
			}
			line := fmt.Sprintf("%q %o", p, mode)
			switch st.Mode & unix.S_IFMT {
			case unix.S_IFREG:
				if p != noContent { // it changed after its listing
					line += fmt.Sprintf(" mtime=%d", st.Mtim.Nano())
					fd, _ := unix.Openat(dirfd, n, unix.O_RDONLY, 0)
					f := os.NewFile(uintptr(fd), n)
					hs := sha256.New()
					var buf bytes.Buffer
					buf.ReadFrom(f)
					hs.Write(buf.Bytes())
					f.Close()
					line += fmt.Sprintf(" size=%d %x", st.Size, hs.Sum(nil)[:8])
				}
			case unix.S_IFLNK:
				tg, _ := readlinkat(dirfd, n)
				line += fmt.Sprintf(" -> %q", tg)
			case unix.S_IFDIR:
				fd, err := unix.Openat(dirfd, n, unix.O_RDONLY|unix.O_DIRECTORY, 0)
				if err != nil {
					t.Fatal(err)
				}
				walk(fd, p)
				// After the children: reading them does not change it.
				line += fmt.Sprintf(" mtime=%d", st.Mtim.Nano())
			default:
				line += fmt.Sprintf(" mtime=%d", st.Mtim.Nano())
			}
			out = append(out, line)
		}
		d.Close()
	}
	fd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	walk(fd, "")
	sort.Strings(out)
	return out
}

// TestHostileTree runs a hostile tree through backup → check → restore →
// compare, then an incremental backup, check and a second restore.
func TestHostileTree(t *testing.T) {
	f := newFixture(t)
	src := filepath.Join(f.dir, "src")
	h := buildHostileTree(t, src)
	testFault = h.fault("src")
	defer func() { testFault = nil }()
	ctx := context.Background()
	sum, err := f.repo.Backup(ctx, []string{src}, BackupOptions{})
	if err != nil {
		t.Fatal(err)
	}
	testFault = nil
	var skipped []string
	for _, s := range sum.SkippedEntries {
		skipped = append(skipped, strings.TrimPrefix(s.Path, src+"/"))
	}
	sort.Strings(skipped)
	want := append([]string(nil), h.skipped...)
	sort.Strings(want)
	if fmt.Sprint(skipped) != fmt.Sprint(want) {
		t.Fatalf("skipped %q, want %q", skipped, want)
	}
	if cs, err := f.repo.Check(ctx, CheckOptions{ReadData: true}); err != nil {
		t.Fatalf("check: %+v %v", cs, err)
	}
	skip := map[string]bool{}
	for _, s := range h.skipped {
		skip[s] = true
	}
	expect := digestTree(t, src, skip, h.changing, true)
	for round := range 2 {
		out := filepath.Join(f.dir, fmt.Sprint("out", round))
		if _, err := f.repo.Restore(ctx, 0, out, RestoreOptions{}); err != nil {
			t.Fatalf("restore %d: %v", round, err)
		}
		got := digestTree(t, filepath.Join(out, "src"), nil, h.changing, false)
		if strings.Join(got, "\n") != strings.Join(expect, "\n") {
			for i := range max(len(got), len(expect)) {
				var g, w string
				if i < len(got) {
					g = got[i]
				}
				if i < len(expect) {
					w = expect[i]
				}
				if g != w {
					t.Errorf("restore %d: got  %s\n                want %s", round, g, w)
				}
			}
			t.FailNow()
		}
		// The growing file holds a prefix of what is on disk now.
		now, _ := os.ReadFile(filepath.Join(src, filepath.FromSlash(h.changing)))
		back, _ := os.ReadFile(filepath.Join(out, "src", filepath.FromSlash(h.changing)))
		if len(back) < 100<<10 || !bytes.HasPrefix(now, back) {
			t.Fatalf("growing file: %d bytes restored, not a prefix of the %d on disk", len(back), len(now))
		}
		removeTree(out)
		// An incremental backup of the same tree, without faults now.
		s2, err := f.repo.Backup(ctx, []string{src}, BackupOptions{})
		if err != nil || len(s2.SkippedEntries) != 1 { // the socket
			t.Fatalf("incremental backup: %+v %v", s2, err)
		}
		if _, err := f.repo.Check(ctx, CheckOptions{}); err != nil {
			t.Fatal(err)
		}
		for _, s := range h.skipped[1:] {
			delete(skip, s)
		}
		expect = digestTree(t, src, skip, h.changing, true)
	}
	if _, err := f.repo.Prune(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := f.repo.Verify(ctx, nil); err != nil {
		t.Fatal(err)
	}
	// Leave the tree removable.
	os.Chmod(filepath.Join(src, "special", "readonly"), 0o755)
}
