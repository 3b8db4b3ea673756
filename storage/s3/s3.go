// Package s3 stores a repository in a bucket of Amazon S3 or of an
// S3-compatible server (versitygw, MinIO, Ceph RGW, Garage, …), using
// aws-sdk-go-v2.
//
// Object name n is stored under key Config.Prefix + "/" + n.
//
// Importing the package registers the scheme "s3" with package storage:
// s3://bucket/prefix?endpoint=URL&region=R&path_style=true|false&part_size=16MiB&concurrency=4
// parses to a Config (Parse), whose String is the canonical URL.
//
// # Credentials and endpoint
//
// Credentials come from the standard AWS chain: AWS_ACCESS_KEY_ID,
// AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN, or AWS_PROFILE and the
// shared config files, or an instance role. The region is Config.Region,
// else AWS_REGION or the profile's, else us-east-1. For a server other than
// AWS, set Config.Endpoint (e.g. "http://127.0.0.1:7070"); most such
// servers want path-style addressing (Config.PathStyle).
//
// # Retries
//
// The SDK's own retries are disabled for single requests: retrying is the
// job of package storage/retry, which wraps a Backend with one visible
// policy, so attempts do not multiply (3 SDK attempts × 6 of ours) and
// errors surface as storage.ErrUnavailable. Two exceptions, for requests
// that are part of a longer operation and cheap to repeat alone: each part
// of a multipart upload (UploadPart) and each page of a listing
// (ListObjectsV2) gets up to 3 SDK attempts, so one lost packet does not
// restart a 1 GiB upload or a listing of a million objects from scratch.
//
// # Writes
//
// An object of up to Config.PartSize bytes is sent with one PutObject;
// a larger one with a multipart upload whose parts (Config.Concurrency at
// a time) are read from the io.ReaderAt as they are sent, so memory use
// does not grow with the object. A failed multipart upload is aborted. If
// aborting fails too (the server went away), the parts stay until a bucket
// lifecycle rule (AbortIncompleteMultipartUpload) removes them; setting
// one, e.g. after 7 days, is recommended.
//
// PutIfAbsent sends If-None-Match: * with PutObject, or with
// CompleteMultipartUpload for a large object (after a HeadObject that
// saves uploading an object whose name is already taken). Amazon S3 and
// versitygw (v1.8.0, tested) honour both atomically; a server that ignores
// the header on CompleteMultipartUpload would make a large PutIfAbsent
// overwrite, so keep create-once objects (manifests) below PartSize, or
// check the server. 412 Precondition Failed means storage.ErrExist. 409
// ConditionalRequestConflict (S3's answer while a concurrent conditional
// write of the same name is in flight) means storage.ErrUnavailable, not
// ErrExist: the other write may still fail, and S3 says to retry; the
// retry then gets 412 or succeeds.
//
// # Errors
//
// A missing object is storage.ErrNotExist; no answer from the server
// (connection refused or reset, timeout), HTTP 5xx except 501, 429 and
// S3's throttling and timeout codes are storage.ErrUnavailable. Refused
// credentials are ErrAccessDenied, missing ones ErrCredentials, a missing
// bucket ErrNoSuchBucket; none of them is retried. Messages never contain
// credentials.
package s3

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	awsretry "github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"github.com/cofferhq/coffer/storage"
)

// Limits and defaults of Config.
const (
	DefaultPartSize    = 16 << 20
	MinPartSize        = 5 << 20 // S3's minimum for all parts but the last
	MaxPartSize        = 5 << 30 // S3's maximum
	DefaultConcurrency = 4
	// DefaultTransfers is the number of small uploads Capabilities
	// advises in flight at once: on a link with 20 ms of latency, 16
	// keep a server busy where the repository's default of 4 on 2 cores
	// waits on round trips (BENCHMARKS.md, "Latency").
	DefaultTransfers = 16
	DefaultRegion    = "us-east-1"
	maxParts         = 10000 // S3's maximum number of parts

	// responseTimeout bounds the wait for the server's answer once a
	// request has been sent, and idleTimeout a read of an object's data
	// that makes no progress, so a server that hangs cannot hang a backup.
	responseTimeout = 2 * time.Minute
	idleTimeout     = 2 * time.Minute
	dialTimeout     = 10 * time.Second
	abortTimeout    = 30 * time.Second
)

// Errors wrapped by the errors of a Backend, in addition to the storage
// package's.
var (
	// ErrAccessDenied: the server refused the credentials or the request
	// (HTTP 403).
	ErrAccessDenied = errors.New("access denied")
	// ErrCredentials: no credentials could be found or loaded.
	ErrCredentials = errors.New("no usable AWS credentials")
	// ErrNoSuchBucket: the bucket does not exist.
	ErrNoSuchBucket = errors.New("bucket does not exist")
)

// Config says where the repository is.
type Config struct {
	// Bucket is required.
	Bucket string
	// Prefix is prepended to every key; a slash is added after it if it
	// has none. Empty puts the repository at the bucket's root.
	Prefix string
	// Endpoint is the base URL of an S3-compatible server, such as
	// "https://s3.example.com" or "http://127.0.0.1:7070". Empty means AWS
	// (or AWS_ENDPOINT_URL, which the SDK reads).
	Endpoint string
	// Region; empty means AWS_REGION or the profile's, else us-east-1.
	Region string
	// PathStyle addresses the bucket as endpoint/bucket/key instead of
	// bucket.endpoint/key.
	PathStyle bool
	// PartSize is the largest object sent in one request and the part
	// size of larger ones (raised automatically so that no object needs
	// more than 10,000 parts). 0 means DefaultPartSize; at least
	// MinPartSize.
	PartSize int64
	// Concurrency is how many parts of one object are uploaded at once.
	// 0 means DefaultConcurrency. Each part in flight holds a connection,
	// not a buffer.
	Concurrency int
}

// Backend is a bucket (and key prefix) holding a repository.
type Backend struct {
	client      *awss3.Client
	bucket      string
	prefix      string // "" or ending in "/"
	partSize    int64
	concurrency int
	location    string // for Location()
	where       string // for messages: "S3 endpoint http://…" or "AWS S3 (region …)"
	// withRetries gives a request a few SDK attempts (see the package
	// documentation).
	withRetries func(*awss3.Options)
	// noPrecheck skips the HeadObject before a large PutIfAbsent, so that
	// tests reach the conditional CompleteMultipartUpload.
	noPrecheck bool
}

var _ storage.Backend = (*Backend)(nil)

// New returns a Backend for cfg. It loads the AWS configuration and
// credential chain but sends no request; Check does.
func New(ctx context.Context, cfg Config) (*Backend, error) {
	if cfg.Bucket == "" {
		return nil, errors.New("s3: no bucket given")
	}
	if strings.ContainsAny(cfg.Bucket, "/\\ ") {
		return nil, fmt.Errorf("s3: invalid bucket name %q", cfg.Bucket)
	}
	prefix := strings.Trim(cfg.Prefix, "/")
	if prefix != "" {
		if err := storage.CheckName(prefix); err != nil {
			return nil, fmt.Errorf("s3: invalid key prefix: %w", err)
		}
		prefix += "/"
	}
	partSize := cfg.PartSize
	switch {
	case partSize == 0:
		partSize = DefaultPartSize
	case partSize < MinPartSize || partSize > MaxPartSize:
		return nil, fmt.Errorf("s3: part size %d is outside S3's limits [%d, %d]", partSize, MinPartSize, MaxPartSize)
	}
	concurrency := cfg.Concurrency
	switch {
	case concurrency == 0:
		concurrency = DefaultConcurrency
	case concurrency < 0:
		return nil, fmt.Errorf("s3: negative concurrency %d", concurrency)
	}
	if cfg.Endpoint != "" {
		if err := checkEndpoint(cfg.Endpoint); err != nil {
			return nil, err
		}
	}

	httpClient := awshttp.NewBuildableClient().
		WithDialerOptions(func(d *net.Dialer) { d.Timeout = dialTimeout }).
		WithTransportOptions(func(t *http.Transport) {
			t.ResponseHeaderTimeout = responseTimeout
			t.MaxIdleConnsPerHost = max(2*concurrency, awshttp.DefaultHTTPTransportMaxIdleConnsPerHost)
		})
	opts := []func(*config.LoadOptions) error{config.WithHTTPClient(httpClient)}
	if cfg.Region != "" {
		opts = append(opts, config.WithRegion(cfg.Region))
	}
	awsCfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("s3: loading the AWS configuration: %w (check AWS_PROFILE, AWS_CONFIG_FILE and ~/.aws/config)", err)
	}
	if awsCfg.Region == "" {
		awsCfg.Region = DefaultRegion
	}
	if awsCfg.Credentials != nil {
		awsCfg.Credentials = credentialsProvider{awsCfg.Credentials}
	}

	b := &Backend{
		bucket:      cfg.Bucket,
		prefix:      prefix,
		partSize:    partSize,
		concurrency: concurrency,
	}
	b.client = awss3.NewFromConfig(awsCfg, func(o *awss3.Options) {
		o.Retryer = aws.NopRetryer{}
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
		o.UsePathStyle = cfg.PathStyle
		// Objects uploaded in parts have no whole-object checksum; the SDK
		// would log that it skipped validating one on every Get.
		o.DisableLogOutputChecksumValidationSkipped = true
	})
	sdkRetryer := awsretry.NewStandard(func(o *awsretry.StandardOptions) {
		o.MaxAttempts = 3
		o.MaxBackoff = 5 * time.Second
		o.RateLimiter = ratelimit.None
	})
	b.withRetries = func(o *awss3.Options) { o.Retryer = sdkRetryer }

	b.location = "s3://" + cfg.Bucket
	if prefix != "" {
		b.location += "/" + strings.TrimSuffix(prefix, "/")
	}
	switch endpoint := cfg.Endpoint; {
	case endpoint == "" && awsCfg.BaseEndpoint != nil:
		endpoint = redactURL(*awsCfg.BaseEndpoint)
		fallthrough
	case endpoint != "":
		b.location += " (endpoint " + endpoint + ")"
		b.where = "S3 endpoint " + endpoint
	default:
		b.location += " (region " + awsCfg.Region + ")"
		b.where = "AWS S3 (region " + awsCfg.Region + ")"
	}
	return b, nil
}

func checkEndpoint(endpoint string) error {
	u, err := url.Parse(endpoint)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return fmt.Errorf("s3: invalid endpoint %q: want a URL such as https://s3.example.com or http://127.0.0.1:7070", redactURL(endpoint))
	}
	if u.User != nil {
		return errors.New("s3: the endpoint URL contains credentials: remove them and set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY instead")
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("s3: invalid endpoint %q: it may not have a query or fragment", redactURL(endpoint))
	}
	return nil
}

// redactURL drops any user information from a URL for messages.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		if i := strings.Index(s, "@"); i >= 0 {
			return "…" + s[i+1:]
		}
		return s
	}
	u.User = nil
	return u.String()
}

// Location implements storage.Backend, e.g.
// "s3://bucket/prefix (endpoint http://127.0.0.1:7070)".
func (b *Backend) Location() string { return b.location }

// Capabilities implements storage.Backend: PutIfAbsent is atomic, by
// If-None-Match: * on PutObject and CompleteMultipartUpload, which the
// server checks and applies as one step (see the package documentation
// for servers that ignore it on CompleteMultipartUpload).
func (b *Backend) Capabilities() storage.Capabilities {
	return storage.Capabilities{AtomicCreate: true, Transfers: DefaultTransfers}
}

func (b *Backend) key(op, name string) (string, error) {
	if err := storage.CheckName(name); err != nil {
		return "", fmt.Errorf("s3: %s: %w", op, err)
	}
	return b.prefix + name, nil
}

// Check asks the server whether the bucket exists and the credentials may
// use it (HeadBucket), for an early, clear error.
func (b *Backend) Check(ctx context.Context) error {
	_, err := b.client.HeadBucket(ctx, &awss3.HeadBucketInput{Bucket: &b.bucket})
	if err == nil {
		return nil
	}
	if status(err) == http.StatusNotFound {
		return b.noBucket("check", "")
	}
	return b.mapErr(ctx, "check", "", err)
}

// Put implements storage.Backend.
func (b *Backend) Put(ctx context.Context, name string, body io.ReaderAt, size int64) error {
	return b.put(ctx, "put", name, body, size, false)
}

// PutIfAbsent implements storage.Backend; see the package documentation.
func (b *Backend) PutIfAbsent(ctx context.Context, name string, body io.ReaderAt, size int64) error {
	return b.put(ctx, "put-if-absent", name, body, size, true)
}

func (b *Backend) put(ctx context.Context, op, name string, body io.ReaderAt, size int64, ifAbsent bool) error {
	key, err := b.key(op, name)
	if err != nil {
		return err
	}
	if size < 0 {
		return fmt.Errorf("s3: %s %q: negative size %d", op, name, size)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("s3: %s %q: %w", op, name, err)
	}
	if size > b.partSize {
		return b.putMultipart(ctx, op, name, key, body, size, ifAbsent)
	}
	r := newBodyReader(body, 0, size)
	in := &awss3.PutObjectInput{
		Bucket:        &b.bucket,
		Key:           &key,
		Body:          r,
		ContentLength: aws.Int64(size),
	}
	if ifAbsent {
		in.IfNoneMatch = aws.String("*")
	}
	_, err = b.client.PutObject(ctx, in)
	return b.mapErr(ctx, op, name, err, r)
}

func (b *Backend) putMultipart(ctx context.Context, op, name, key string, body io.ReaderAt, size int64, ifAbsent bool) error {
	if ifAbsent && !b.noPrecheck {
		// Not the guarantee (If-None-Match on completion is), but it saves
		// uploading an object whose name is known to be taken.
		_, err := b.client.HeadObject(ctx, &awss3.HeadObjectInput{Bucket: &b.bucket, Key: &key})
		if err == nil {
			return b.exists(op, name)
		}
		if err := b.mapErr(ctx, op, name, err); !errors.Is(err, storage.ErrNotExist) {
			return err
		}
	}
	created, err := b.client.CreateMultipartUpload(ctx, &awss3.CreateMultipartUploadInput{
		Bucket:            &b.bucket,
		Key:               &key,
		ChecksumAlgorithm: types.ChecksumAlgorithmCrc32,
	})
	if err != nil {
		return b.mapErr(ctx, op, name, err)
	}
	uploadID := created.UploadId
	parts, err := b.uploadParts(ctx, op, name, key, uploadID, body, size)
	if err == nil {
		in := &awss3.CompleteMultipartUploadInput{
			Bucket:          &b.bucket,
			Key:             &key,
			UploadId:        uploadID,
			MultipartUpload: &types.CompletedMultipartUpload{Parts: parts},
		}
		if ifAbsent {
			in.IfNoneMatch = aws.String("*")
		}
		_, err = b.client.CompleteMultipartUpload(ctx, in)
		if err = b.mapErr(ctx, op, name, err); err == nil {
			return nil
		}
	}
	// The caller's context may be what ended the upload: abort anyway.
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), abortTimeout)
	defer cancel()
	b.client.AbortMultipartUpload(actx, &awss3.AbortMultipartUploadInput{Bucket: &b.bucket, Key: &key, UploadId: uploadID})
	return err
}

// uploadParts uploads the parts of body, b.concurrency at a time, and
// returns them in order for CompleteMultipartUpload. It stops at the first
// failure.
func (b *Backend) uploadParts(ctx context.Context, op, name, key string, uploadID *string, body io.ReaderAt, size int64) ([]types.CompletedPart, error) {
	partSize := b.partSize
	if (size+partSize-1)/partSize > maxParts {
		const mib = 1 << 20
		partSize = ((size+maxParts-1)/maxParts + mib - 1) / mib * mib
	}
	n := int((size + partSize - 1) / partSize)
	parts := make([]types.CompletedPart, n)

	workCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		next     atomic.Int64
		once     sync.Once
		firstErr error
		wg       sync.WaitGroup
	)
	for range min(b.concurrency, n) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || workCtx.Err() != nil {
					return
				}
				off := int64(i) * partSize
				r := newBodyReader(body, off, min(partSize, size-off))
				num := aws.Int32(int32(i + 1))
				out, err := b.client.UploadPart(workCtx, &awss3.UploadPartInput{
					Bucket:            &b.bucket,
					Key:               &key,
					UploadId:          uploadID,
					PartNumber:        num,
					Body:              r,
					ContentLength:     aws.Int64(r.size),
					ChecksumAlgorithm: types.ChecksumAlgorithmCrc32,
				}, b.withRetries)
				if err != nil {
					once.Do(func() {
						firstErr = b.mapErr(ctx, op, name, err, r)
						cancel()
					})
					return
				}
				parts[i] = types.CompletedPart{PartNumber: num, ETag: out.ETag, ChecksumCRC32: out.ChecksumCRC32}
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("s3: %s %q: %w", op, name, err)
	}
	return parts, nil
}

// Get implements storage.Backend. It streams the object; an error while
// reading wraps storage.ErrUnavailable, and a read that gets no data for
// two minutes fails.
func (b *Backend) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	key, err := b.key("get", name)
	if err != nil {
		return nil, err
	}
	out, err := b.client.GetObject(ctx, &awss3.GetObjectInput{Bucket: &b.bucket, Key: &key})
	if err != nil {
		return nil, b.mapErr(ctx, "get", name, err)
	}
	g := &getBody{rc: out.Body, b: b, ctx: ctx, name: name}
	g.timer = time.AfterFunc(idleTimeout, func() {
		g.stalled.Store(true)
		out.Body.Close()
	})
	g.timer.Stop()
	return g, nil
}

type getBody struct {
	rc      io.ReadCloser
	b       *Backend
	ctx     context.Context
	name    string
	timer   *time.Timer
	stalled atomic.Bool
}

func (g *getBody) Read(p []byte) (int, error) {
	g.timer.Reset(idleTimeout)
	n, err := g.rc.Read(p)
	g.timer.Stop()
	if err == nil || err == io.EOF {
		return n, err
	}
	switch {
	case g.ctx.Err() != nil:
		err = fmt.Errorf("s3: reading %q: %w", g.name, g.ctx.Err())
	case g.stalled.Load():
		err = fmt.Errorf("s3: reading %q from %s: %w: no data for %v", g.name, g.b.where, storage.ErrUnavailable, idleTimeout)
	default:
		err = fmt.Errorf("s3: reading %q from %s: %w: %w", g.name, g.b.where, storage.ErrUnavailable, err)
	}
	return n, err
}

func (g *getBody) Close() error {
	g.timer.Stop()
	return g.rc.Close()
}

// Stat implements storage.Backend. A missing bucket looks like a missing
// object here (HEAD answers carry no error code).
func (b *Backend) Stat(ctx context.Context, name string) (storage.ObjectInfo, error) {
	key, err := b.key("stat", name)
	if err != nil {
		return storage.ObjectInfo{}, err
	}
	out, err := b.client.HeadObject(ctx, &awss3.HeadObjectInput{Bucket: &b.bucket, Key: &key})
	if err != nil {
		return storage.ObjectInfo{}, b.mapErr(ctx, "stat", name, err)
	}
	return storage.ObjectInfo{Name: name, Size: aws.ToInt64(out.ContentLength), ModTime: aws.ToTime(out.LastModified)}, nil
}

// List implements storage.Backend. Keys ending in "/" (folder markers made
// by other tools) are skipped.
func (b *Backend) List(ctx context.Context, prefix string, fn func(storage.ObjectInfo) error) error {
	if err := storage.CheckPrefix(prefix); err != nil {
		return fmt.Errorf("s3: list: %w", err)
	}
	p := awss3.NewListObjectsV2Paginator(b.client, &awss3.ListObjectsV2Input{
		Bucket: &b.bucket,
		Prefix: aws.String(b.prefix + prefix),
	})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx, b.withRetries)
		if err != nil {
			return b.mapErr(ctx, "list", prefix, err)
		}
		for _, obj := range page.Contents {
			name, ok := strings.CutPrefix(aws.ToString(obj.Key), b.prefix)
			if !ok || name == "" || strings.HasSuffix(name, "/") {
				continue
			}
			info := storage.ObjectInfo{Name: name, Size: aws.ToInt64(obj.Size), ModTime: aws.ToTime(obj.LastModified)}
			if err := fn(info); err != nil {
				return err
			}
		}
	}
	return nil
}

// Delete implements storage.Backend.
func (b *Backend) Delete(ctx context.Context, name string) error {
	key, err := b.key("delete", name)
	if err != nil {
		return err
	}
	_, err = b.client.DeleteObject(ctx, &awss3.DeleteObjectInput{Bucket: &b.bucket, Key: &key})
	if err = b.mapErr(ctx, "delete", name, err); errors.Is(err, storage.ErrNotExist) {
		return nil
	}
	return err
}

// bodyReader reads size bytes of an io.ReaderAt from off as the
// io.ReadSeeker the SDK wants (it seeks to hash the body and to rewind it
// for a retry). It remembers a failure of the ReaderAt, so that a broken
// body is reported as such and not as a network failure.
type bodyReader struct {
	ra        io.ReaderAt
	base, pos int64
	size      int64
	mu        sync.Mutex
	err       error
}

func newBodyReader(ra io.ReaderAt, off, size int64) *bodyReader {
	return &bodyReader{ra: ra, base: off, size: size}
}

func (r *bodyReader) Read(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return 0, r.err
	}
	if r.pos >= r.size {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), r.size-r.pos)]
	n, err := r.ra.ReadAt(p, r.base+r.pos)
	r.pos += int64(n)
	if n == len(p) {
		return n, nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF // shorter than the size given
	}
	r.err = fmt.Errorf("reading the data at offset %d: %w", r.base+r.pos, err)
	return n, r.err
}

func (r *bodyReader) Seek(offset int64, whence int) (int64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += r.pos
	case io.SeekEnd:
		offset += r.size
	default:
		return 0, errors.New("s3: bodyReader.Seek: invalid whence")
	}
	if offset < 0 {
		return 0, errors.New("s3: bodyReader.Seek: negative position")
	}
	r.pos = offset
	return offset, nil
}

func (r *bodyReader) failure() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// credentialsProvider marks failures to get credentials, which the SDK
// reports like network errors, so that mapErr can tell them apart.
type credentialsProvider struct{ aws.CredentialsProvider }

type credentialsError struct{ err error }

func (e *credentialsError) Error() string { return e.err.Error() }
func (e *credentialsError) Unwrap() error { return e.err }

func (p credentialsProvider) Retrieve(ctx context.Context) (aws.Credentials, error) {
	c, err := p.CredentialsProvider.Retrieve(ctx)
	if err != nil && ctx.Err() == nil {
		return c, &credentialsError{err}
	}
	return c, err
}

func status(err error) int {
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

func (b *Backend) exists(op, name string) error {
	return fmt.Errorf("s3: %s %q in %s: %w", op, name, b.location, storage.ErrExist)
}

func (b *Backend) noBucket(op, name string) error {
	return fmt.Errorf("s3: %s %q: %w: there is no bucket %q at %s: create it first (for example: aws s3 mb s3://%s), or fix the bucket name",
		op, name, ErrNoSuchBucket, b.bucket, b.where, b.bucket)
}

// mapErr turns an SDK error of op on name into one that says what failed
// and wraps the right sentinel error (see the package documentation).
// bodies are the readers the request read from.
func (b *Backend) mapErr(ctx context.Context, op, name string, err error, bodies ...*bodyReader) error {
	if err == nil {
		return nil
	}
	for _, r := range bodies {
		if rerr := r.failure(); rerr != nil {
			return fmt.Errorf("s3: %s %q: %w", op, name, rerr)
		}
	}
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("s3: %s %q: %w", op, name, cerr)
	}
	var code string
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		code = apiErr.ErrorCode()
	}
	st := status(err)
	unavailable := func(why string) error {
		return fmt.Errorf("s3: %s %q at %s: %w (%s): %w", op, name, b.where, storage.ErrUnavailable, why, err)
	}
	switch {
	case code == "NoSuchBucket":
		return b.noBucket(op, name)
	case code == "NoSuchKey" || code == "NotFound" || (st == http.StatusNotFound && code != "NoSuchUpload"):
		return fmt.Errorf("s3: %s %q in %s: %w", op, name, b.location, storage.ErrNotExist)
	case code == "PreconditionFailed" || st == http.StatusPreconditionFailed:
		return b.exists(op, name)
	case code == "ConditionalRequestConflict" || (st == http.StatusConflict && op == "put-if-absent"):
		return unavailable("a concurrent write of the same name was in progress; try again")
	case code == "RequestTimeTooSkewed":
		return fmt.Errorf("s3: %s %q at %s: the system clock differs too much from the server's: set the clock right (enable NTP): %w", op, name, b.where, err)
	case code == "PermanentRedirect" || code == "AuthorizationHeaderMalformed" || code == "IllegalLocationConstraintException" ||
		st == http.StatusMovedPermanently:
		return fmt.Errorf("s3: %s %q: the bucket %q is not in region %s at %s: set the bucket's region (region= in the location, or AWS_REGION): %w",
			op, name, b.bucket, b.client.Options().Region, b.where, err)
	case isAccessCode(code) || st == http.StatusForbidden || st == http.StatusUnauthorized:
		return fmt.Errorf("s3: %s %q: %w by %s (bucket %q): check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) and that this key may use the bucket: %w",
			op, name, ErrAccessDenied, b.where, b.bucket, err)
	case isTransientCode(code) || st == http.StatusTooManyRequests || st == http.StatusRequestTimeout:
		return unavailable("the server is busy or timed out")
	case st == http.StatusNotImplemented:
		return fmt.Errorf("s3: %s %q: %s does not implement this request: %w", op, name, b.where, err)
	case st >= 500:
		return unavailable("server error")
	case st != 0 || apiErr != nil:
		return fmt.Errorf("s3: %s %q at %s: %w", op, name, b.where, err)
	}
	if _, ok := errors.AsType[*credentialsError](err); ok {
		return fmt.Errorf("s3: %s %q: %w: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary keys), or AWS_PROFILE: %w",
			op, name, ErrCredentials, err)
	}
	// No answer from the server: connection refused or reset, timeout,
	// DNS failure, TLS handshake failure, truncated response.
	return unavailable("no answer; check the endpoint and the network")
}

func isAccessCode(code string) bool {
	switch code {
	case "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
		"InvalidToken", "TokenRefreshRequired", "AllAccessDisabled", "AccountProblem",
		"InvalidSecurity", "Forbidden", "Unauthorized", "MissingSecurityHeader":
		return true
	}
	return false
}

func isTransientCode(code string) bool {
	switch code {
	case "SlowDown", "Throttling", "ThrottlingException", "ThrottledException",
		"RequestThrottled", "RequestThrottledException", "TooManyRequestsException",
		"RequestLimitExceeded", "BandwidthLimitExceeded", "ProvisionedThroughputExceededException",
		"RequestTimeout", "RequestTimeoutException", "InternalError", "ServiceUnavailable",
		"PriorRequestNotComplete", "OperationAborted", "EC2ThrottledException", "TransactionInProgressException":
		return true
	}
	return false
}
