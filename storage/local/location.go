package local

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"

	"github.com/cofferhq/coffer/storage"
)

// Forms are the location forms of a local directory.
var Forms = []string{
	"a directory path (/abs/dir, relative/dir, ./name:with-colon)",
	"file:///absolute/dir",
}

func init() {
	storage.Register(storage.Provider{
		Scheme: "file",
		Paths:  true,
		Forms:  Forms,
		Help: `A local directory, created (0700) when a repository is created there:

  /var/backups/coffer        an absolute path
  backups/coffer             a relative path, made absolute when parsed
  ./backup:2024              a relative path whose first name has a colon
                             ("backup:2024" alone would read as a scheme)
  file:///var/backups/coffer the same as a URL (file://localhost/… too)`,
		Parse: Parse,
	})
}

// Config is the location of a repository in a directory. It is a
// storage.Config.
type Config struct {
	// Dir is the directory, absolute and clean.
	Dir string
}

// Parse parses a plain path (made absolute against the working directory)
// or a file:///absolute/path URL.
func Parse(loc string) (storage.Config, error) {
	if len(loc) >= 5 && strings.EqualFold(loc[:5], "file:") {
		return parseFile(loc)
	}
	if loc == "" {
		return nil, errors.New("local: no directory given")
	}
	abs, err := filepath.Abs(loc)
	if err != nil {
		return nil, fmt.Errorf("invalid repository location %s: %v", loc, err)
	}
	return Config{Dir: abs}, nil
}

func parseFile(loc string) (storage.Config, error) {
	u, err := url.Parse(loc)
	if err != nil {
		return nil, fmt.Errorf("invalid repository location %s: %v; use file:///absolute/path", storage.Redact(loc), unwrapURLError(err))
	}
	if u.User != nil || (u.Host != "" && u.Host != "localhost") {
		return nil, fmt.Errorf("invalid repository location %s: a file URL names a local path, file:///absolute/path", storage.Redact(loc))
	}
	if u.Opaque != "" || !filepath.IsAbs(u.Path) {
		return nil, fmt.Errorf("invalid repository location %s: a file URL needs an absolute path, file:///absolute/path (or give a plain relative path)", storage.Redact(loc))
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("invalid repository location %s: a file URL takes no parameters", storage.Redact(loc))
	}
	return Config{Dir: filepath.Clean(u.Path)}, nil
}

// unwrapURLError drops the *url.Error layer, whose message repeats the
// whole (unredacted) URL.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// String implements storage.Config: the absolute directory path.
func (c Config) String() string { return c.Dir }

// Open implements storage.Config: New(c.Dir), which creates the directory
// if it does not exist.
func (c Config) Open(ctx context.Context) (storage.Backend, error) {
	return New(c.Dir)
}
