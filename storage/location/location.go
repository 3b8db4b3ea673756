// Package location opens the storage.Backend a repository location string
// names. The supported forms are:
//
//	/var/backups/coffer              a directory (relative paths too)
//	file:///var/backups/coffer       the same, as a URL
//	s3://bucket/prefix               Amazon S3
//	s3://bucket/prefix?endpoint=http://127.0.0.1:7070&region=us-east-1&path_style=true
//	                                 an S3-compatible server
//
// Parameters of s3 URLs:
//
//	endpoint     base URL of an S3-compatible server (default: AWS)
//	region       region (default: AWS_REGION, the profile's, else us-east-1)
//	path_style   true or false; default true when endpoint is set, else false
//	part_size    upload part size, bytes or with KiB/MiB/GiB (default 16MiB, at least 5MiB)
//	concurrency  parts of one object uploaded at once (default 4)
//
// S3 credentials never go in the location: they come from
// AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE…).
package location

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/cofferhq/coffer/storage"
	"github.com/cofferhq/coffer/storage/local"
	"github.com/cofferhq/coffer/storage/retry"
	"github.com/cofferhq/coffer/storage/s3"
)

// Forms lists the supported location forms, for help and error messages.
const Forms = "a directory path, file:///absolute/path, or s3://bucket/prefix[?endpoint=URL&region=R&path_style=true|false]"

// Kind is the kind of storage a location names.
type Kind string

// Kinds of storage.
const (
	Local Kind = "local"
	S3    Kind = "s3"
)

// Spec is a parsed location.
type Spec struct {
	Kind Kind
	// Dir is the directory of a Local location, as given (maybe relative).
	Dir string
	// S3 is the configuration of an S3 location.
	S3 s3.Config
}

// Open opens the storage at loc, wrapped in retry.New with
// retry.DefaultPolicy. The backend is a storage.Syncer when the storage
// needs syncing (a directory).
func Open(ctx context.Context, loc string) (storage.Backend, error) {
	return OpenWithPolicy(ctx, loc, retry.DefaultPolicy)
}

// OpenWithPolicy is Open with another retry policy (Attempts 1: none).
func OpenWithPolicy(ctx context.Context, loc string, p retry.Policy) (storage.Backend, error) {
	spec, err := Parse(loc)
	if err != nil {
		return nil, err
	}
	var b storage.Backend
	switch spec.Kind {
	case Local:
		b, err = local.New(spec.Dir)
	case S3:
		b, err = s3.New(ctx, spec.S3)
	}
	if err != nil {
		return nil, fmt.Errorf("opening repository location %s: %w", Redact(loc), err)
	}
	return retry.New(b, p), nil
}

var schemeRE = regexp.MustCompile(`^([a-zA-Z][a-zA-Z0-9+.-]*):`)

// Parse parses a location without opening it.
func Parse(loc string) (Spec, error) {
	if loc == "" {
		return Spec{}, fmt.Errorf("no repository location given: use %s", Forms)
	}
	m := schemeRE.FindStringSubmatch(loc)
	if m == nil || (len(m[1]) == 1 && !strings.HasPrefix(loc, m[0]+"//")) {
		// No scheme (a one-letter "scheme" without "//" is a Windows drive).
		return Spec{Kind: Local, Dir: loc}, nil
	}
	switch strings.ToLower(m[1]) {
	case "file":
		return parseFile(loc)
	case "s3":
		return parseS3(loc)
	}
	if !strings.HasPrefix(loc, m[0]+"//") {
		return Spec{Kind: Local, Dir: loc}, nil // "backup:2024" is a relative path
	}
	return Spec{}, fmt.Errorf("unsupported repository location %s: the scheme %q is not one of file or s3; use %s",
		Redact(loc), m[1], Forms)
}

func parseFile(loc string) (Spec, error) {
	u, err := url.Parse(loc)
	if err != nil {
		return Spec{}, fmt.Errorf("invalid repository location %s: %v; use %s", Redact(loc), unwrapURLError(err), Forms)
	}
	if u.User != nil || (u.Host != "" && u.Host != "localhost") {
		return Spec{}, fmt.Errorf("invalid repository location %s: a file URL names a local path, file:///absolute/path", Redact(loc))
	}
	if u.Opaque != "" || !filepath.IsAbs(u.Path) {
		return Spec{}, fmt.Errorf("invalid repository location %s: a file URL needs an absolute path, file:///absolute/path (or give a plain relative path)", Redact(loc))
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return Spec{}, fmt.Errorf("invalid repository location %s: a file URL takes no parameters", Redact(loc))
	}
	return Spec{Kind: Local, Dir: u.Path}, nil
}

func parseS3(loc string) (Spec, error) {
	bad := func(format string, args ...any) (Spec, error) {
		return Spec{}, fmt.Errorf("invalid repository location %s: %s (form: s3://bucket/prefix[?endpoint=URL&region=R&path_style=true|false])",
			Redact(loc), fmt.Sprintf(format, args...))
	}
	u, err := url.Parse(loc)
	if err != nil {
		return bad("%v", unwrapURLError(err))
	}
	if u.User != nil {
		return bad("credentials do not belong in the location: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)")
	}
	if u.Host == "" {
		return bad("no bucket")
	}
	if u.Port() != "" {
		return bad("the bucket %q has a port: the server goes in the endpoint parameter", u.Host)
	}
	if u.Fragment != "" {
		return bad("unexpected fragment")
	}
	cfg := s3.Config{Bucket: u.Host, Prefix: strings.Trim(u.Path, "/")}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return bad("bad parameters: %v", err)
	}
	pathStyle := ""
	for k, vs := range q {
		if len(vs) != 1 {
			return bad("parameter %s given %d times", k, len(vs))
		}
		v := vs[0]
		switch k {
		case "endpoint":
			cfg.Endpoint = v
		case "region":
			cfg.Region = v
		case "path_style":
			pathStyle = v
		case "part_size":
			n, err := parseSize(v)
			if err != nil {
				return bad("part_size: %v", err)
			}
			cfg.PartSize = n
		case "concurrency":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				return bad("concurrency %q is not a positive number", v)
			}
			cfg.Concurrency = n
		default:
			return bad("unknown parameter %q; known: endpoint, region, path_style, part_size, concurrency", k)
		}
	}
	cfg.PathStyle = cfg.Endpoint != ""
	if pathStyle != "" {
		b, err := strconv.ParseBool(pathStyle)
		if err != nil {
			return bad("path_style %q is not true or false", pathStyle)
		}
		cfg.PathStyle = b
	}
	return Spec{Kind: S3, S3: cfg}, nil
}

// parseSize parses "16777216", "16MiB", "512KiB", "1GiB" (also "16M",
// "16MB": binary units all the same).
func parseSize(s string) (int64, error) {
	num := strings.TrimRight(s, "KMGiBkmgib")
	unit := strings.ToLower(s[len(num):])
	mult := int64(1)
	switch unit {
	case "", "b":
	case "k", "kb", "kib":
		mult = 1 << 10
	case "m", "mb", "mib":
		mult = 1 << 20
	case "g", "gb", "gib":
		mult = 1 << 30
	default:
		return 0, fmt.Errorf("unknown unit in %q", s)
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n <= 0 || n > (1<<40)/mult {
		return 0, fmt.Errorf("%q is not a size such as 16MiB", s)
	}
	return n * mult, nil
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
