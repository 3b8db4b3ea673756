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
	"strings"
	"time"

	"github.com/cofferhq/coffer/internal/device/container"
	"github.com/cofferhq/coffer/storage"
)

// A manifest is a container of kind manifest holding JSON lines
// (DESIGN.md, "Manifests"): a header line, one line per entry in walk order,
// and an end line with counts.

const manifestFormat = 1

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
	Stats      genStats  `json:"stats"`
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

const (
	typeFile    = "file"
	typeDir     = "dir"
	typeSymlink = "symlink"
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
// encodes as ["hex id", size].
type piece struct {
	ID   pieceID
	Size int64
}

func (p piece) MarshalJSON() ([]byte, error) {
	return []byte(fmt.Sprintf(`["%s",%d]`, p.ID, p.Size)), nil
}

func (p *piece) UnmarshalJSON(b []byte) error {
	var raw [2]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
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
	default:
		return fmt.Errorf("entry %q has unknown type %q", e.Path, e.Type)
	}
	return nil
}

// isCleanRelative reports whether p is a slash-separated relative path with
// no empty, "." or ".." components and no NUL or backslash: one that names
// a place strictly inside any directory it is joined to.
func isCleanRelative(p string) bool {
	if p == "" || p[0] == '/' || strings.ContainsAny(p, "\x00\\") || path.Clean(p) != p {
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
	if mr.header.Format != manifestFormat {
		return nil, fmt.Errorf("%w: backup %d has manifest format %d; upgrade Coffer", container.ErrUnsupportedVersion, gen, mr.header.Format)
	}
	if mr.header.Repository != hex.EncodeToString(repoID[:]) {
		return nil, integrityf("backup %d manifest belongs to another repository", gen)
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
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	mw.stats.add(e)
	mw.w.Write(b)
	return mw.w.WriteByte('\n')
}
