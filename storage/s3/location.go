package s3

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/cofferhq/coffer/storage"
)

// Form is the location form of an S3 bucket.
const Form = "s3://bucket/prefix[?endpoint=URL&region=R&path_style=true|false]"

func init() {
	storage.Register(storage.Provider{
		Scheme: "s3",
		Forms:  []string{Form},
		Help: `A bucket (and key prefix) of Amazon S3 or an S3-compatible server:

  s3://bucket/prefix                 Amazon S3
  s3://bucket/prefix?endpoint=http://127.0.0.1:7070&region=us-east-1
                                     an S3-compatible server

Parameters:

  endpoint     base URL of an S3-compatible server (default: AWS)
  region       region (default: AWS_REGION, the profile's, else us-east-1)
  path_style   true or false; default true when endpoint is set, else false
  part_size    upload part size, bytes or with KiB/MiB/GiB (default 16MiB, at least 5MiB)
  concurrency  parts of one object uploaded at once (default 4)

Credentials never go in the location: they come from AWS_ACCESS_KEY_ID and
AWS_SECRET_ACCESS_KEY (or AWS_PROFILE…).`,
		Parse: Parse,
	})
}

// Parse parses an s3://bucket/prefix?… location into a Config (a
// storage.Config). It refuses credentials anywhere in it.
func Parse(loc string) (storage.Config, error) {
	bad := func(format string, args ...any) (storage.Config, error) {
		return nil, fmt.Errorf("invalid repository location %s: %s (form: %s)",
			storage.Redact(loc), fmt.Sprintf(format, args...), Form)
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
	cfg := Config{Bucket: u.Host, Prefix: strings.Trim(u.Path, "/")}
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
			if err := checkEndpoint(v); err != nil {
				return bad("%v", err)
			}
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
	return cfg, nil
}

// String implements storage.Config: the canonical s3:// URL, with only
// the parameters that differ from their defaults, in a fixed order.
func (c Config) String() string {
	u := url.URL{Scheme: "s3", Host: c.Bucket}
	if p := strings.Trim(c.Prefix, "/"); p != "" {
		u.Path = "/" + p
	}
	var q []string
	add := func(k, v string) {
		// Readable: ':' and '/' need no escaping in a query value.
		v = strings.NewReplacer("%3A", ":", "%2F", "/").Replace(url.QueryEscape(v))
		q = append(q, k+"="+v)
	}
	if c.Endpoint != "" {
		add("endpoint", c.Endpoint)
	}
	if c.Region != "" {
		add("region", c.Region)
	}
	if c.PathStyle != (c.Endpoint != "") {
		add("path_style", strconv.FormatBool(c.PathStyle))
	}
	if c.PartSize != 0 {
		add("part_size", formatSize(c.PartSize))
	}
	if c.Concurrency != 0 {
		add("concurrency", strconv.Itoa(c.Concurrency))
	}
	s := u.String()
	if len(q) > 0 {
		s += "?" + strings.Join(q, "&")
	}
	return s
}

// Open implements storage.Config: New(ctx, c).
func (c Config) Open(ctx context.Context) (storage.Backend, error) {
	return New(ctx, c)
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

// formatSize is parseSize's inverse: the largest binary unit that divides n.
func formatSize(n int64) string {
	for _, u := range []struct {
		suffix string
		size   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n%u.size == 0 {
			return strconv.FormatInt(n/u.size, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10)
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
