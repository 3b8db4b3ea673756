package repository

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/cofferhq/coffer/internal/device/container"
	"github.com/cofferhq/coffer/storage"
)

// A manifest is a container of kind manifest holding JSON lines
// (DESIGN.md, "Manifests"): a header line, one line per entry in walk order,
// and an end line with counts.

// manifestFormat is the manifest version this Coffer writes. Version 1
// stored names as JSON strings, which lose invalid UTF-8 (it became
// U+FFFD); version 2 stores every name and link target as an escaped
// string that gives back the exact bytes (escapeName). Version 3 is
// version 2 whose pieces may be packed (FORMAT.md 3.5): a reader finds a
// piece in a pack through the indexes, else as an object of its own. It
// was bumped so that a Coffer that knows no packs refuses such a backup
// (upgrade) instead of reporting its packed pieces lost and "repairing"
// it. Readers read all three.
const manifestFormat = 3

// minManifestFormat is the oldest manifest version readers accept.
const minManifestFormat = 1

// maxManifestLine bounds one JSON line (a file of 16 TiB in 4 MiB pieces
// needs ~300 MiB of piece list; we cap files at 64 GiB of pieces per line
// budget below and reject longer lines as corrupt).
const maxManifestLine = 64 << 20

type manifestHeader struct {
	Format     int       `json:"coffer_manifest"`
	Repository string    `json:"repository"`
	Time       time.Time `json:"time"`
	Host       string    `json:"host"`
	Paths      []string  `json:"paths"`
	Parent     uint64    `json:"parent,omitempty"`
	Version    string    `json:"coffer_version,omitempty"`
	// Repaired is the generation this one is a repaired copy of
	// (Repair), absent otherwise.
	Repaired uint64   `json:"repaired_from,omitempty"`
	Stats    genStats `json:"stats"`
}

type genStats struct {
	Entries int64 `json:"entries"`
	Files   int64 `json:"files"`
	Dirs    int64 `json:"dirs"`
	Links   int64 `json:"symlinks"`
	Bytes   int64 `json:"bytes"`
	Pieces  int64 `json:"pieces"`
}

func (s *genStats) add(e *entry) {
	s.Entries++
	switch e.Type {
	case typeFile:
		s.Files++
		s.Bytes += e.Size
		s.Pieces += int64(len(e.Pieces))
	case typeDir:
		s.Dirs++
	case typeSymlink:
		s.Links++
	}
}

// escapeName turns a name (any bytes) into a string that is valid UTF-8,
// so that it survives JSON unchanged: every byte that is not part of a
// valid UTF-8 sequence, and every '%', is written as '%' and two
// uppercase hex digits; everything else is copied. unescapeName reverses
// it exactly. (Manifest version 2, FORMAT.md 3.3.)
func escapeName(s string) string {
	clean := true
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == '%' || (r == utf8.RuneError && n == 1) {
			clean = false
			break
		}
		i += n
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == '%' || (r == utf8.RuneError && n == 1) {
			fmt.Fprintf(&b, "%%%02X", s[i])
			i++
			continue
		}
		b.WriteString(s[i : i+n])
		i += n
	}
	return b.String()
}

// unescapeName reverses escapeName. A '%' not followed by two hex digits
// is an error.
func unescapeName(s string) (string, error) {
	if strings.IndexByte(s, '%') < 0 {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		if i+2 >= len(s) {
			return "", fmt.Errorf("bad escape in name %q", s)
		}
		v, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
		if err != nil {
			return "", fmt.Errorf("bad escape in name %q", s)
		}
		b.WriteByte(byte(v))
		i += 2
	}
	return b.String(), nil
}

const (
	typeFile    = "file"
	typeDir     = "dir"
	typeSymlink = "symlink"
	// typeFIFO is a named pipe (version 2): restored with mkfifo, never
	// opened or read.
	typeFIFO = "fifo"
)

// entry is one file, directory or symbolic link.
type entry struct {
	Path   string  `json:"path"`
	Type   string  `json:"type"`
	Mode   uint32  `json:"mode"`             // permission bits (and sticky/setgid/setuid as Go's fs.FileMode bits)
	MTime  int64   `json:"mtime"`            // Unix nanoseconds
	Size   int64   `json:"size,omitempty"`   // files
	Pieces []piece `json:"pieces,omitempty"` // files
	Target string  `json:"target,omitempty"` // symlinks
	// Change detection (not restored): inode, device and status-change time.
	Inode uint64 `json:"ino,omitempty"`
	Dev   uint64 `json:"dev,omitempty"`
	CTime int64  `json:"ctime,omitempty"`
}

// piece is one stored object of a file: its id and plaintext size. It
// encodes as ["hex id", size] for a padded (version 2) piece, and as
// ["hex id", size, 1] in a version 2 manifest for a version 1 piece (one
// a version 1 backup stored, reused); every piece of a version 1 manifest
// is a version 1 piece.
type piece struct {
	ID   pieceID
	Size int64
	V1   bool
}

func (p piece) MarshalJSON() ([]byte, error) {
	if p.V1 {
		return []byte(fmt.Sprintf(`["%s",%d,1]`, p.ID, p.Size)), nil
	}
	return []byte(fmt.Sprintf(`["%s",%d]`, p.ID, p.Size)), nil
}

func (p *piece) UnmarshalJSON(b []byte) error {
	var raw []json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	switch {
	case len(raw) == 3 && string(raw[2]) == "1":
		p.V1 = true
	case len(raw) != 2:
		return errors.New("a piece is [id, size] or [id, size, 1]")
	}
	var h string
	if err := json.Unmarshal(raw[0], &h); err != nil {
		return err
	}
	if len(h) != 64 {
		return errors.New("piece id is not 64 hex digits")
	}
	if _, err := hex.Decode(p.ID[:], []byte(h)); err != nil {
		return err
	}
	if err := json.Unmarshal(raw[1], &p.Size); err != nil {
		return err
	}
	if p.Size <= 0 || p.Size > maxPieceSize {
		return fmt.Errorf("piece size %d out of range", p.Size)
	}
	return nil
}

type manifestEnd struct {
	End genStats `json:"end"`
}

// validate checks an entry read from a manifest: a clean relative path that
// cannot escape a restore target, a known type, consistent sizes.
func (e *entry) validate() error {
	if e.Path == "" || !isCleanRelative(e.Path) {
		return fmt.Errorf("entry path %q is not a clean relative path", e.Path)
	}
	switch e.Type {
	case typeFile:
		var sum int64
		for _, p := range e.Pieces {
			sum += p.Size
		}
		if sum != e.Size {
			return fmt.Errorf("entry %q: pieces add up to %d bytes, size says %d", e.Path, sum, e.Size)
		}
	case typeDir:
		if len(e.Pieces) != 0 || e.Size != 0 {
			return fmt.Errorf("directory entry %q has data", e.Path)
		}
	case typeSymlink:
		if e.Target == "" || strings.IndexByte(e.Target, 0) >= 0 {
			return fmt.Errorf("symlink entry %q has an invalid target", e.Path)
		}
		if len(e.Pieces) != 0 {
			return fmt.Errorf("symlink entry %q has data", e.Path)
		}
	case typeFIFO:
		if len(e.Pieces) != 0 || e.Size != 0 || e.Target != "" {
			return fmt.Errorf("fifo entry %q has data", e.Path)
		}
	default:
		return fmt.Errorf("entry %q has unknown type %q", e.Path, e.Type)
	}
	return nil
}

// isCleanRelative reports whether p is a slash-separated relative path with
// no empty, "." or ".." components and no NUL: one that names a place
// strictly inside any directory it is joined to. Any other byte is allowed
// (a backslash is an ordinary byte in a Unix name; invalid UTF-8 too):
// every name a Unix file system can hold is accepted.
func isCleanRelative(p string) bool {
	if p == "" || p[0] == '/' || strings.IndexByte(p, 0) >= 0 || path.Clean(p) != p {
		return false
	}
	for c := range strings.SplitSeq(p, "/") {
		if c == "" || c == "." || c == ".." {
			return false
		}
	}
	return true
}

// comparePaths orders paths the way the walk visits them: component by
// component, each directory's children sorted by name, a directory before
// its contents. Mapping '/' to NUL (which no name contains) and comparing
// bytes gives exactly that order.
func comparePaths(a, b string) int {
	n := min(len(a), len(b))
	for i := 0; i < n; i++ {
		ca, cb := a[i], b[i]
		if ca == '/' {
			ca = 0
		}
		if cb == '/' {
			cb = 0
		}
		if ca != cb {
			if ca < cb {
				return -1
			}
			return 1
		}
	}
	switch {
	case len(a) < len(b):
		return -1
	case len(a) > len(b):
		return 1
	}
	return 0
}

// manifestReader streams a manifest's entries, checking order, validity
// and the end line.
type manifestReader struct {
	gen    uint64
	header manifestHeader
	br     *bufio.Reader
	rc     io.Closer
	last   string
	stats  genStats
	done   bool
}

// openManifest opens generation gen and reads its header line.
func (r *Repository) openManifest(ctx context.Context, gen uint64) (*manifestReader, error) {
	name := manifestName(gen)
	rc, err := r.b.Get(ctx, name)
	if err != nil {
		if errors.Is(err, storage.ErrNotExist) {
			return nil, fmt.Errorf("%w: generation %d", ErrNoGeneration, gen)
		}
		return nil, fmt.Errorf("reading backup %d: %w", gen, err)
	}
	cr, err := container.NewReader(rc, r.key, container.KindManifest, r.ref(name), 0)
	if err != nil {
		rc.Close()
		return nil, fmt.Errorf("backup %d manifest: %w", gen, wrapRead(err))
	}
	mr, err := parseManifest(cr, rc, gen, r.id)
	if err != nil {
		rc.Close()
		return nil, err
	}
	return mr, nil
}

// parseManifest reads a manifest's header line from its plaintext and
// returns a reader for its entries. rc is closed by the reader's Close.
func parseManifest(plain io.Reader, rc io.Closer, gen uint64, repoID [16]byte) (*manifestReader, error) {
	mr := &manifestReader{gen: gen, br: bufio.NewReaderSize(plain, 256<<10), rc: rc}
	line, err := mr.line()
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(line, &mr.header); err != nil || mr.header.Format == 0 {
		return nil, integrityf("backup %d manifest: bad header line", gen)
	}
	if mr.header.Format < minManifestFormat || mr.header.Format > manifestFormat {
		return nil, fmt.Errorf("%w: backup %d has manifest format %d; upgrade Coffer", container.ErrUnsupportedVersion, gen, mr.header.Format)
	}
	if mr.header.Repository != hex.EncodeToString(repoID[:]) {
		return nil, integrityf("backup %d manifest belongs to another repository", gen)
	}
	if mr.header.Format >= 2 {
		for i, p := range mr.header.Paths {
			u, err := unescapeName(p)
			if err != nil {
				return nil, integrityf("backup %d manifest: %v", gen, err)
			}
			mr.header.Paths[i] = u
		}
	}
	return mr, nil
}

func (mr *manifestReader) Close() error { return mr.rc.Close() }

func (mr *manifestReader) line() ([]byte, error) {
	var buf []byte
	for {
		chunk, err := mr.br.ReadSlice('\n')
		buf = append(buf, chunk...)
		if len(buf) > maxManifestLine {
			return nil, integrityf("backup %d manifest: line too long", mr.gen)
		}
		if err == nil {
			return buf[:len(buf)-1], nil
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if errors.Is(err, io.EOF) {
			return nil, integrityf("backup %d manifest: ends without an end line", mr.gen)
		}
		return nil, fmt.Errorf("backup %d manifest: %w", mr.gen, wrapRead(err))
	}
}

// next returns the next entry, or io.EOF after a valid end line.
func (mr *manifestReader) next() (*entry, error) {
	if mr.done {
		return nil, io.EOF
	}
	line, err := mr.line()
	if err != nil {
		return nil, err
	}
	if strings.HasPrefix(string(line), `{"end":`) {
		var end manifestEnd
		if err := json.Unmarshal(line, &end); err != nil {
			return nil, integrityf("backup %d manifest: bad end line", mr.gen)
		}
		if end.End != mr.stats || end.End != mr.header.Stats {
			return nil, integrityf("backup %d manifest: counts do not match its entries", mr.gen)
		}
		// Nothing may follow the end line.
		if _, err := mr.br.ReadByte(); err != io.EOF {
			if err == nil {
				return nil, integrityf("backup %d manifest: data after the end line", mr.gen)
			}
			return nil, fmt.Errorf("backup %d manifest: %w", mr.gen, wrapRead(err))
		}
		mr.done = true
		return nil, io.EOF
	}
	e := new(entry)
	dec := json.NewDecoder(strings.NewReader(string(line)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(e); err != nil {
		return nil, integrityf("backup %d manifest: bad entry: %v", mr.gen, err)
	}
	if mr.header.Format == 1 {
		for i := range e.Pieces {
			e.Pieces[i].V1 = true
		}
	}
	if mr.header.Format >= 2 {
		if e.Path, err = unescapeName(e.Path); err == nil {
			e.Target, err = unescapeName(e.Target)
		}
		if err != nil {
			return nil, integrityf("backup %d manifest: %v", mr.gen, err)
		}
	} else if e.Type == typeFIFO {
		return nil, integrityf("backup %d manifest: entry %q has unknown type %q", mr.gen, e.Path, e.Type)
	}
	if err := e.validate(); err != nil {
		return nil, integrityf("backup %d manifest: %v", mr.gen, err)
	}
	if mr.last != "" && comparePaths(mr.last, e.Path) >= 0 {
		return nil, integrityf("backup %d manifest: entries out of order at %q", mr.gen, e.Path)
	}
	if dir := path.Dir(e.Path); dir != "." && !strings.HasPrefix(mr.last+"/", dir+"/") {
		// The parent directory must be the previous entry or an ancestor
		// of it: in walk order every entry's directory precedes it.
		return nil, integrityf("backup %d manifest: %q appears before its directory", mr.gen, e.Path)
	}
	mr.last = e.Path
	mr.stats.add(e)
	return e, nil
}

// manifestWriter writes entries as JSON lines.
type manifestWriter struct {
	w     *bufio.Writer
	stats genStats
	last  string
}

func (mw *manifestWriter) add(e *entry) error {
	if mw.last != "" && comparePaths(mw.last, e.Path) >= 0 {
		return fmt.Errorf("internal error: manifest entries out of order (%q after %q)", e.Path, mw.last)
	}
	mw.last = e.Path
	w := *e
	w.Path, w.Target = escapeName(e.Path), escapeName(e.Target)
	b, err := json.Marshal(&w)
	if err != nil {
		return err
	}
	mw.stats.add(e)
	mw.w.Write(b)
	return mw.w.WriteByte('\n')
}
