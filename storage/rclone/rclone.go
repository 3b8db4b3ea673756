// Package rclone is the storage provider for every remote rclone knows:
// Google Drive (its appDataFolder too), iCloud Drive, OneDrive, Dropbox,
// WebDAV, SFTP and the rest, configured as usual with `rclone config`.
//
//	rclone:REMOTE:path       a remote of the user's rclone config (RCLONE_CONFIG
//	                         or rclone's default config file)
//	rclone::backend,opt=v:path   an on-the-fly remote (no secrets in it)
//	rclone:/abs/dir          rclone's local backend (for tests)
//
// It drives an installed rclone binary (rclone in PATH, or the file named
// by COFFER_RCLONE) rather than linking rclone as a library: one `rclone
// rcd` per process and config file, on 127.0.0.1 with a random user and
// password passed in its environment, started on first use and stopped
// with the process (DESIGN.md, "rclone" has the measurements behind the
// choice). Objects are fetched through rcd's --rc-serve and written with
// operations/uploadfile; on backends where an upload is visible while it
// runs (rclone's PartialUploads: local, SFTP, FTP, SMB) an object is
// uploaded under .coffer-tmp/ and moved into place, so a reader never
// sees part of one.
//
// Capabilities: no AtomicCreate (rclone has no create-only write);
// DuplicateNames where rclone says the backend allows duplicate files
// (Drive); ListLag 0 for the backends whose listings are consistent
// (local, sftp, ftp, smb, webdav, s3, azureblob, google cloud storage) and
// DefaultListLag for the others (an estimate: Drive and the other
// consumer clouds state no bound), unless COFFER_RCLONE_LIST_LAG (a Go
// duration) says otherwise.
package rclone

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"os"
	"path"
	"strings"
	"time"

	"github.com/cofferhq/coffer/storage"
)

// Forms are the location forms of the provider.
var Forms = []string{"rclone:REMOTE:path"}

// MinVersion is the oldest rclone the provider runs (major, minor). It is
// tested with v1.76.0; Debian 12's v1.60.1 fails overwrites on SFTP (its
// Move does not use posix-rename) and does not report PartialUploads.
var MinVersion = [2]int{1, 63}

func atLeast(v []int, min [2]int) bool {
	if len(v) < 2 {
		return false
	}
	return v[0] > min[0] || (v[0] == min[0] && v[1] >= min[1])
}

// DefaultListLag is the listing lag assumed for remotes not known to list
// consistently (Google Drive, OneDrive, Dropbox, iCloud Drive…).
const DefaultListLag = 10 * time.Second

// DefaultTransfers is the number of uploads advised in flight at once.
const DefaultTransfers = 16

// tmpDir holds uploads in progress on backends with partial uploads. Its
// name starts with a dot, so no object name can be in it (CheckName) and
// List skips it.
const tmpDir = ".coffer-tmp"

// consistent are the backend types whose listings show every completed
// write at once.
var consistent = map[string]bool{
	"local": true, "sftp": true, "ftp": true, "smb": true, "webdav": true,
	"s3": true, "azureblob": true, "google cloud storage": true, "alias": false,
}

func init() {
	storage.Register(storage.Provider{
		Scheme: "rclone",
		Forms:  Forms,
		Help: `Any rclone remote, through an installed rclone (1.60 or later; iCloud Drive
needs 1.69 or later), using the user's rclone config (RCLONE_CONFIG):

  rclone:gdrive:coffer       folder coffer of the remote named gdrive
  rclone:appdata:            a Drive remote with root_folder_id = appDataFolder
  rclone:icloud:Backups/coffer
  rclone:nas:backups         a WebDAV or SFTP remote

See README.md ("Google Drive, iCloud Drive, WebDAV, SFTP") for set-up.`,
		Parse: Parse,
	})
}

// Config is the location of a repository on an rclone remote. It is a
// storage.Config.
type Config struct {
	// Remote is what rclone calls the remote and path: "gdrive:coffer".
	Remote string
}

// Parse parses "rclone:REMOTE:path".
func Parse(loc string) (storage.Config, error) {
	if len(loc) < 7 || !strings.EqualFold(loc[:7], "rclone:") {
		return nil, fmt.Errorf("invalid repository location %s: use rclone:REMOTE:path", loc)
	}
	rem := loc[7:]
	switch {
	case rem == "":
		return nil, errors.New("invalid repository location rclone:: name a remote and path, rclone:REMOTE:path (see `rclone listremotes`)")
	case strings.ContainsAny(rem, "[]\x00\n\r"):
		return nil, fmt.Errorf("invalid repository location rclone:…: the remote may not contain brackets or control characters")
	case !strings.Contains(rem, ":") && !strings.HasPrefix(rem, "/"):
		return nil, fmt.Errorf("invalid repository location rclone:%s: name a remote and path, rclone:REMOTE:path (an absolute local path is /dir)", rem)
	}
	if i := strings.Index(rem, ":"); strings.HasPrefix(rem, ":") || strings.Contains(rem[:max(i, 0)], ",") {
		if secretOpt.MatchString(rem) {
			return nil, errors.New("invalid repository location rclone:…: it carries a secret option; put the remote in the rclone config (`rclone config`) and name it")
		}
	}
	return Config{Remote: rem}, nil
}

// String implements storage.Config.
func (c Config) String() string { return "rclone:" + c.Remote }

// Open implements storage.Config: it starts (or reuses) the rclone daemon
// and asks it about the remote.
func (c Config) Open(ctx context.Context) (storage.Backend, error) {
	return Open(ctx, c.Remote)
}

// Backend is a storage.Backend on an rclone remote.
type Backend struct {
	remote   string
	key      daemonKey
	partial  bool // upload under tmpDir, then move
	caps     storage.Capabilities
	typ      string
	features map[string]bool
}

var _ storage.Backend = (*Backend)(nil)

// Open returns a backend for an rclone remote and path ("gdrive:coffer").
func Open(ctx context.Context, remote string) (*Backend, error) {
	key, err := currentKey()
	if err != nil {
		return nil, err
	}
	b := &Backend{remote: remote, key: key}
	var ver struct {
		Version    string
		Decomposed []int
	}
	if err := b.call(ctx, "core/version", map[string]any{}, &ver); err != nil {
		return nil, fmt.Errorf("rclone: %w", err)
	}
	if !atLeast(ver.Decomposed, MinVersion) {
		return nil, fmt.Errorf("rclone: %s is %s; Coffer needs rclone v%d.%d or later (Debian 12's 1.60 fails overwrites on SFTP): https://rclone.org/install/ or `go install github.com/rclone/rclone@v1.76.0`", key.bin, ver.Version, MinVersion[0], MinVersion[1])
	}
	var info struct {
		Features map[string]bool
	}
	if err := b.call(ctx, "operations/fsinfo", map[string]any{"fs": remote}, &info); err != nil {
		return nil, fmt.Errorf("rclone: remote %s: %w", remote, err)
	}
	b.features = info.Features
	b.typ = b.remoteType(ctx)
	partial, known := info.Features["PartialUploads"]
	if !known { // rclone before 1.63 does not say
		partial = map[string]bool{"local": true, "sftp": true, "ftp": true, "smb": true}[b.typ]
	}
	b.partial = partial && info.Features["Move"]
	lag := DefaultListLag
	if consistent[b.typ] {
		lag = 0
	}
	if s := os.Getenv("COFFER_RCLONE_LIST_LAG"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 {
			return nil, fmt.Errorf("rclone: COFFER_RCLONE_LIST_LAG=%q is not a duration such as 10s", s)
		}
		lag = d
	}
	b.caps = storage.Capabilities{DuplicateNames: info.Features["DuplicateFiles"], ListLag: lag, Transfers: DefaultTransfers}
	return b, nil
}

// remoteType is the rclone backend type of the remote ("drive", "sftp"),
// or "" when it cannot be learnt.
func (b *Backend) remoteType(ctx context.Context) string {
	r := b.remote
	if strings.HasPrefix(r, "/") {
		return "local"
	}
	name, _, _ := strings.Cut(r, ":")
	if strings.HasPrefix(r, ":") { // :backend,opt=v:path
		t, _, _ := strings.Cut(strings.TrimPrefix(r, ":"), ":")
		t, _, _ = strings.Cut(t, ",")
		return t
	}
	name, _, _ = strings.Cut(name, ",")
	var cfg map[string]any
	if err := b.call(ctx, "config/get", map[string]any{"name": name}, &cfg); err != nil {
		return ""
	}
	t, _ := cfg["type"].(string)
	return t
}

// Type is the rclone backend type of the remote: "drive", "webdav"…
func (b *Backend) Type() string { return b.typ }

func (b *Backend) op(name string) map[string]any {
	return map[string]any{"fs": b.remote, "remote": name}
}

// Put implements storage.Backend.
func (b *Backend) Put(ctx context.Context, name string, body io.ReaderAt, size int64) error {
	return b.put(ctx, "put", name, body, size)
}

func (b *Backend) put(ctx context.Context, op, name string, body io.ReaderAt, size int64) error {
	if err := storage.CheckName(name); err != nil {
		return fmt.Errorf("rclone: %s: %w", op, err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("rclone: %s %q: %w", op, name, err)
	}
	if !b.partial {
		if err := b.upload(ctx, name, body, size); err != nil {
			return fmt.Errorf("rclone: %s %q: %w", op, name, err)
		}
		return nil
	}
	var rnd [12]byte
	rand.Read(rnd[:])
	tmp := tmpDir + "/" + hex.EncodeToString(rnd[:])
	if err := b.upload(ctx, tmp, body, size); err != nil {
		b.call(context.WithoutCancel(ctx), "operations/deletefile", b.op(tmp), nil)
		return fmt.Errorf("rclone: %s %q: %w", op, name, err)
	}
	err := b.call(ctx, "operations/movefile", map[string]any{"srcFs": b.remote, "srcRemote": tmp, "dstFs": b.remote, "dstRemote": name}, nil)
	if err != nil {
		b.call(context.WithoutCancel(ctx), "operations/deletefile", b.op(tmp), nil)
		return fmt.Errorf("rclone: %s %q: moving the upload into place: %w", op, name, err)
	}
	return nil
}

// upload streams body to name with operations/uploadfile.
func (b *Backend) upload(ctx context.Context, name string, body io.ReaderAt, size int64) error {
	if size < 0 {
		return fmt.Errorf("negative size %d", size)
	}
	dir, file := path.Split(name)
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	bodyErr := make(chan error, 1)
	go func() {
		err := func() error {
			part, err := mw.CreateFormFile("file0", file)
			if err != nil {
				return err
			}
			n, err := io.Copy(part, io.NewSectionReader(body, 0, size))
			if err != nil {
				return fmt.Errorf("reading the %d-byte body: %w", size, err)
			}
			if n != size {
				return fmt.Errorf("reading the %d-byte body: %w after %d bytes", size, io.ErrUnexpectedEOF, n)
			}
			return mw.Close()
		}()
		bodyErr <- err
		pw.CloseWithError(err)
	}()
	q := url.Values{"fs": {b.remote}, "remote": {strings.TrimSuffix(dir, "/")}}
	err := b.post(ctx, "operations/uploadfile?"+q.Encode(), mw.FormDataContentType(), pr, nil)
	pr.CloseWithError(errors.New("upload ended"))
	if berr := <-bodyErr; berr != nil {
		return berr
	}
	return err
}

// PutIfAbsent implements storage.Backend: a look-up, then Put. rclone has
// no create-only write, so it is not atomic (Capabilities).
func (b *Backend) PutIfAbsent(ctx context.Context, name string, body io.ReaderAt, size int64) error {
	if err := storage.CheckName(name); err != nil {
		return fmt.Errorf("rclone: put-if-absent: %w", err)
	}
	if _, err := b.Stat(ctx, name); err == nil {
		return fmt.Errorf("rclone: put-if-absent %q: %w", name, storage.ErrExist)
	} else if !errors.Is(err, storage.ErrNotExist) {
		return err
	}
	return b.put(ctx, "put-if-absent", name, body, size)
}

// Get implements storage.Backend.
func (b *Backend) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	if err := storage.CheckName(name); err != nil {
		return nil, fmt.Errorf("rclone: get: %w", err)
	}
	d, err := getDaemon(b.key)
	if err != nil {
		return nil, err
	}
	u := &url.URL{Scheme: "http", Host: d.host, Path: "/[" + b.remote + "]/" + name}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("rclone: get %q: %w", name, err)
	}
	req.SetBasicAuth(d.user, d.pass)
	resp, err := d.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("rclone: get %q: %w", name, transportErr(ctx, err))
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		return nil, fmt.Errorf("rclone: get %q: %w", name, rcError(resp))
	}
	return resp.Body, nil
}

type item struct {
	Path    string
	Size    int64
	ModTime time.Time
	IsDir   bool
}

// Stat implements storage.Backend.
func (b *Backend) Stat(ctx context.Context, name string) (storage.ObjectInfo, error) {
	if err := storage.CheckName(name); err != nil {
		return storage.ObjectInfo{}, fmt.Errorf("rclone: stat: %w", err)
	}
	var out struct{ Item *item }
	if err := b.call(ctx, "operations/stat", b.op(name), &out); err != nil {
		return storage.ObjectInfo{}, fmt.Errorf("rclone: stat %q: %w", name, err)
	}
	if out.Item == nil || out.Item.IsDir {
		return storage.ObjectInfo{}, fmt.Errorf("rclone: stat %q: %w", name, storage.ErrNotExist)
	}
	return storage.ObjectInfo{Name: name, Size: out.Item.Size, ModTime: out.Item.ModTime}, nil
}

// List implements storage.Backend. Names in dot-directories (uploads in
// progress) are skipped. On a backend with duplicate names a name is
// reported once per copy.
func (b *Backend) List(ctx context.Context, prefix string, fn func(storage.ObjectInfo) error) error {
	if err := storage.CheckPrefix(prefix); err != nil {
		return fmt.Errorf("rclone: list: %w", err)
	}
	dir := prefix[:strings.LastIndex(prefix, "/")+1]
	var out struct{ List []item }
	in := b.op(strings.TrimSuffix(dir, "/"))
	in["opt"] = map[string]any{"recurse": true, "filesOnly": true, "noMimeType": true}
	if err := b.call(ctx, "operations/list", in, &out); err != nil {
		if errors.Is(err, storage.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("rclone: list %q: %w", prefix, err)
	}
	for _, it := range out.List {
		if it.IsDir || !strings.HasPrefix(it.Path, prefix) || storage.CheckName(it.Path) != nil {
			continue
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("rclone: list %q: %w", prefix, err)
		}
		if err := fn(storage.ObjectInfo{Name: it.Path, Size: it.Size, ModTime: it.ModTime}); err != nil {
			return err
		}
	}
	return nil
}

// Delete implements storage.Backend.
func (b *Backend) Delete(ctx context.Context, name string) error {
	if err := storage.CheckName(name); err != nil {
		return fmt.Errorf("rclone: delete: %w", err)
	}
	err := b.call(ctx, "operations/deletefile", b.op(name), nil)
	if err != nil && !errors.Is(err, storage.ErrNotExist) {
		return fmt.Errorf("rclone: delete %q: %w", name, err)
	}
	return nil
}

// Location implements storage.Backend.
func (b *Backend) Location() string { return "rclone:" + b.remote }

// Capabilities implements storage.Backend.
func (b *Backend) Capabilities() storage.Capabilities { return b.caps }

// call posts a JSON rc call and decodes its answer into out (if not nil).
func (b *Backend) call(ctx context.Context, method string, in map[string]any, out any) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	body, _ := json.Marshal(in)
	return b.post(ctx, method, "application/json", bytes.NewReader(body), out)
}

func (b *Backend) post(ctx context.Context, method, ctype string, body io.Reader, out any) error {
	d, err := getDaemon(b.key)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+d.host+"/"+method, body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", ctype)
	req.SetBasicAuth(d.user, d.pass)
	resp, err := d.client.Do(req)
	if err != nil {
		return transportErr(ctx, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return rcError(resp)
	}
	if out == nil {
		io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("%w: decoding rclone's answer: %v", storage.ErrUnavailable, err)
	}
	return nil
}

func transportErr(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	return fmt.Errorf("%w: rclone daemon: %v", storage.ErrUnavailable, err)
}

// rcError turns an rc error answer into an error of the storage package.
func rcError(resp *http.Response) error {
	var e struct {
		Error string `json:"error"`
	}
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if json.Unmarshal(data, &e) != nil || e.Error == "" {
		e.Error = strings.TrimSpace(string(data))
	}
	msg := "rclone: " + e.Error
	lower := strings.ToLower(e.Error)
	switch {
	case resp.StatusCode == http.StatusNotFound,
		strings.Contains(lower, "object not found"), strings.Contains(lower, "directory not found"),
		strings.Contains(lower, "is a directory"), strings.Contains(lower, "not a directory"),
		strings.Contains(lower, "no such file"), strings.Contains(lower, "file does not exist"),
		// WebDAV (Apache) answers a listing below a file with 400.
		strings.Contains(lower, "couldn't list files: 400 bad request"), strings.Contains(lower, "read metadata failed: 400 bad request"):
		return fmt.Errorf("%w (%s)", storage.ErrNotExist, msg)
	case resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests:
		return fmt.Errorf("%w: %s", storage.ErrUnavailable, msg)
	}
	return errors.New(msg)
}
