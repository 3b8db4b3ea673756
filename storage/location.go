package storage

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
)

// ErrInvalidLocation is wrapped by the errors of Parse: the location is
// empty, names no registered provider, or its provider refused it.
var ErrInvalidLocation = errors.New("invalid repository location")

// Provider is a kind of storage that a repository location can name. A
// provider package registers one in its init function:
//
//	func init() {
//		storage.Register(storage.Provider{Scheme: "s3", Forms: …, Parse: parse})
//	}
//
// and a program that should understand its locations imports it (package
// client imports storage/local and storage/s3).
type Provider struct {
	// Scheme names the provider in locations: "s3" for s3://bucket/prefix.
	// Lower case: a letter, then letters, digits, '+', '-' or '.', at
	// least two characters (a single letter is a Windows drive).
	Scheme string
	// Paths: the provider also takes plain paths, locations with no
	// scheme. At most one provider does (storage/local, scheme "file").
	Paths bool
	// Forms are the location forms the provider accepts, for help and
	// error messages, e.g. "s3://bucket/prefix[?endpoint=URL&region=R]".
	Forms []string
	// Help, optional, documents the forms and parameters at length.
	Help string
	// Parse parses loc, which starts with Scheme and a colon (in any
	// case) or, for a Paths provider, is a plain path. It checks all that
	// can be checked without reaching the storage and returns the
	// provider's configuration. Its errors must not show credentials
	// (Redact(loc) is fit to quote).
	Parse func(loc string) (Config, error)
}

// Config is a provider's parsed location: local.Config, s3.Config.
type Config interface {
	// String returns the location in canonical form: Parse of it gives
	// an equal Config, so it is what a device saves. It holds no
	// credentials (a provider refuses locations that carry them).
	String() string
	// Open returns a backend for the location, unwrapped (no retries).
	Open(ctx context.Context) (Backend, error)
}

var registry struct {
	sync.RWMutex
	providers map[string]Provider
	paths     string // scheme of the Paths provider
}

// schemeRE matches a URL scheme and its colon (RFC 3986).
var schemeRE = regexp.MustCompile(`^([a-zA-Z][a-zA-Z0-9+.-]*):`)

// Register makes a provider's locations known to Parse. It panics if the
// scheme is invalid or taken, Parse is nil, or a second provider claims
// plain paths: all programming errors, met at start-up.
func Register(p Provider) {
	if len(p.Scheme) < 2 || p.Scheme != strings.ToLower(p.Scheme) || !schemeRE.MatchString(p.Scheme+":") {
		panic(fmt.Sprintf("storage: Register of invalid scheme %q", p.Scheme))
	}
	if p.Parse == nil {
		panic("storage: Register of scheme " + p.Scheme + " with no Parse")
	}
	registry.Lock()
	defer registry.Unlock()
	if _, dup := registry.providers[p.Scheme]; dup {
		panic("storage: Register called twice for scheme " + p.Scheme)
	}
	if p.Paths {
		if registry.paths != "" {
			panic("storage: schemes " + registry.paths + " and " + p.Scheme + " both claim plain paths")
		}
		registry.paths = p.Scheme
	}
	if registry.providers == nil {
		registry.providers = make(map[string]Provider)
	}
	p.Forms = slices.Clone(p.Forms)
	registry.providers[p.Scheme] = p
}

// Lookup returns the provider registered for scheme (in any case).
func Lookup(scheme string) (Provider, bool) {
	registry.RLock()
	defer registry.RUnlock()
	p, ok := registry.providers[strings.ToLower(scheme)]
	p.Forms = slices.Clone(p.Forms)
	return p, ok
}

// Schemes returns the registered schemes, sorted.
func Schemes() []string {
	registry.RLock()
	defer registry.RUnlock()
	s := make([]string, 0, len(registry.providers))
	for scheme := range registry.providers {
		s = append(s, scheme)
	}
	slices.Sort(s)
	return s
}

// Forms returns the location forms of every registered provider: those of
// the provider of plain paths first, then by scheme.
func Forms() []string {
	schemes := Schemes()
	registry.RLock()
	defer registry.RUnlock()
	if i := slices.Index(schemes, registry.paths); i > 0 {
		schemes = append(append([]string{registry.paths}, schemes[:i]...), schemes[i+1:]...)
	}
	var forms []string
	for _, s := range schemes {
		forms = append(forms, registry.providers[s].Forms...)
	}
	return forms
}

func formsText() string {
	f := Forms()
	switch len(f) {
	case 0:
		return "no storage provider is registered"
	case 1:
		return "use " + f[0]
	}
	return "use " + strings.Join(f[:len(f)-1], ", ") + " or " + f[len(f)-1]
}

// Location is a parsed repository location: the provider that serves it
// and the provider's configuration. Parse makes one; the zero Location
// names nothing. Two Locations name the same storage when their String
// forms are equal.
type Location struct {
	scheme string
	cfg    Config
}

// Parse parses a repository location, after trimming surrounding space:
//
//   - "scheme:…" with a registered scheme (in any case) goes to that
//     scheme's provider: file:///abs/dir, s3://bucket/prefix…;
//   - a location with no scheme, or with a single letter before the colon
//     (a Windows drive, C:\backups), is a plain path, for the provider of
//     plain paths (storage/local): /abs/dir, relative/dir;
//   - any other "word:" prefix is an error that lists the known schemes
//     and forms. So "rclone:gdrive:coffer" is refused, not taken for a
//     relative directory; a relative directory whose first name contains
//     a colon is written with "./" in front: ./backup:2024.
//
// Parse does not reach the storage; Location.Open does. Errors wrap
// ErrInvalidLocation and never show credentials.
func Parse(loc string) (Location, error) {
	loc = strings.TrimSpace(loc)
	if loc == "" {
		return Location{}, fmt.Errorf("%w: no repository location given: %s", ErrInvalidLocation, formsText())
	}
	var scheme string
	if m := schemeRE.FindStringSubmatch(loc); m != nil && len(m[1]) > 1 {
		scheme = strings.ToLower(m[1])
	}
	registry.RLock()
	if scheme == "" {
		scheme = registry.paths
	}
	p, ok := registry.providers[scheme]
	registry.RUnlock()
	switch {
	case !ok && scheme == "":
		return Location{}, fmt.Errorf("%w %s: no storage provider for plain paths is registered (import storage/local)", ErrInvalidLocation, loc)
	case !ok:
		return Location{}, fmt.Errorf("%w %s: unknown storage scheme %q; the known schemes are %s: %s (write a relative directory whose name has a colon as ./backup:2024)",
			ErrInvalidLocation, Redact(loc), scheme, strings.Join(Schemes(), ", "), formsText())
	}
	cfg, err := p.Parse(loc)
	if err != nil {
		if !errors.Is(err, ErrInvalidLocation) {
			err = invalidLocation{err}
		}
		return Location{}, err
	}
	return Location{scheme: p.Scheme, cfg: cfg}, nil
}

// invalidLocation marks a provider's parse error as ErrInvalidLocation
// without changing its message.
type invalidLocation struct{ err error }

func (e invalidLocation) Error() string        { return e.err.Error() }
func (e invalidLocation) Unwrap() error        { return e.err }
func (e invalidLocation) Is(target error) bool { return target == ErrInvalidLocation }

// IsZero reports whether l is the zero Location.
func (l Location) IsZero() bool { return l.cfg == nil }

// Scheme is the scheme of l's provider ("file" for a plain path too).
func (l Location) Scheme() string { return l.scheme }

// Config is the provider's configuration: local.Config, s3.Config…
func (l Location) Config() Config { return l.cfg }

// String is l in canonical form, which Parse turns back into l: what a
// device saves. A plain path is absolute.
func (l Location) String() string {
	if l.cfg == nil {
		return ""
	}
	return l.cfg.String()
}

// Redacted is String through Redact, for messages and logs.
func (l Location) Redacted() string { return Redact(l.String()) }

// Open connects to the storage at l. The backend is the provider's own,
// without retries: retry.Open adds them (package client opens that way).
func (l Location) Open(ctx context.Context) (Backend, error) {
	if l.cfg == nil {
		return nil, fmt.Errorf("%w: no repository location given: %s", ErrInvalidLocation, formsText())
	}
	b, err := l.cfg.Open(ctx)
	if err != nil {
		return nil, fmt.Errorf("opening repository location %s: %w", l.Redacted(), err)
	}
	return b, nil
}

// secretParams are query parameters whose values Redact hides.
var secretParams = regexp.MustCompile(`(?i)(secret|password|passwd|token|signature|credential|access_?key|auth|session|sig$|^key$)`)

var userinfoRE = regexp.MustCompile(`//[^/?#]*@`)

// Redact returns loc fit for messages and logs: user information
// ("user:password@") and the values of parameters that look secret
// (secret, token, password, signature, credential, access_key…) are
// replaced by "REDACTED", also inside an endpoint parameter. A plain path
// is returned as it is.
func Redact(loc string) string {
	m := schemeRE.FindStringSubmatch(loc)
	if m == nil || !strings.HasPrefix(loc, m[0]+"//") {
		return loc
	}
	u, err := url.Parse(loc)
	if err != nil {
		// Unparseable: hide anything that could be user information or
		// a parameter.
		s := userinfoRE.ReplaceAllString(loc, "//REDACTED@")
		if i := strings.IndexAny(s, "?#"); i >= 0 {
			s = s[:i] + "?REDACTED"
		}
		return s
	}
	if u.User != nil {
		u.User = url.User("REDACTED")
	}
	if u.RawQuery != "" {
		parts := strings.Split(u.RawQuery, "&")
		for i, p := range parts {
			k, v, _ := strings.Cut(p, "=")
			key, err := url.QueryUnescape(k)
			if err != nil {
				parts[i] = "REDACTED"
				continue
			}
			val, err := url.QueryUnescape(v)
			switch {
			case err != nil || secretParams.MatchString(key):
				parts[i] = k + "=REDACTED"
			case strings.Contains(val, "://"):
				if r := Redact(val); r != val {
					parts[i] = k + "=" + url.QueryEscape(r)
				}
			}
		}
		u.RawQuery = strings.Join(parts, "&")
	}
	if u.Fragment != "" {
		u.Fragment = "REDACTED"
	}
	return u.String()
}
