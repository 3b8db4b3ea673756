// Package latency measures many small uploads over a link with injected
// latency (internal/latencyproxy) to the S3 server (versitygw) and to the
// WebDAV server (Apache mod_dav, through rclone), at several numbers of
// uploads in flight, and a whole backup of many small files at the
// repository's default concurrency and at the one the backend's
// Capabilities.Transfers advises. Run by bench/latency/run.sh
// (COFFER_BENCH_LATENCY=1); skipped otherwise, so the test command does
// not run it.
package latency

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/cofferhq/coffer/internal/device/backupkey"
	"github.com/cofferhq/coffer/internal/device/repository"
	"github.com/cofferhq/coffer/internal/latencyproxy"
	"github.com/cofferhq/coffer/storage"
	"github.com/cofferhq/coffer/storage/rclone"
	"github.com/cofferhq/coffer/storage/rclone/rclonetest"
	"github.com/cofferhq/coffer/storage/s3"
	"github.com/cofferhq/coffer/storage/s3/s3test"
)

func env(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func rtt() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("RTT")); err == nil {
		return d
	}
	return 20 * time.Millisecond
}

func TestLatency(t *testing.T) {
	if os.Getenv("COFFER_BENCH_LATENCY") == "" {
		t.Skip("a benchmark: run bench/latency/run.sh")
	}
	objects := env("OBJECTS", 400)
	files := env("FILES", 400)
	t.Run("s3", func(t *testing.T) {
		srv := s3test.StartServer(t)
		p, err := latencyproxy.Start(srv.Endpoint[len("http://"):], rtt())
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		open := func(prefix string) storage.Backend {
			b, err := s3.New(t.Context(), s3.Config{Bucket: srv.Bucket, Prefix: prefix, Endpoint: "http://" + p.Addr, Region: "us-east-1", PathStyle: true})
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
		run(t, "S3 (versitygw)", open, objects, files)
	})
	for _, pacer := range []string{"", "1ms"} {
		name, what := "webdav", "WebDAV (Apache, through rclone; rclone's default pacer, 10 ms between calls)"
		if pacer != "" {
			name, what = "webdav-pacer-"+pacer, "WebDAV (Apache, through rclone; pacer_min_sleep = "+pacer+")"
		}
		t.Run(name, func(t *testing.T) {
			s := rclonetest.StartWebDAV(t)
			p, err := latencyproxy.Start(s.Addr, rtt())
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			conf, err := os.ReadFile(os.Getenv("RCLONE_CONFIG"))
			if err != nil {
				t.Fatal(err)
			}
			conf = regexp.MustCompile(regexp.QuoteMeta(s.Addr)).ReplaceAll(conf, []byte(p.Addr))
			if pacer != "" {
				conf = append(conf, []byte("pacer_min_sleep = "+pacer+"\n")...)
			}
			path := filepath.Join(t.TempDir(), "proxied.conf")
			os.WriteFile(path, conf, 0o600)
			t.Setenv("RCLONE_CONFIG", path)
			n := 0
			open := func(string) storage.Backend {
				n++
				b, err := rclone.Open(t.Context(), s.Remote(t, n))
				if err != nil {
					t.Fatal(err)
				}
				return b
			}
			run(t, what, open, objects, files)
		})
	}
}

func run(t *testing.T, what string, open func(prefix string) storage.Backend, objects, files int) {
	fmt.Printf("\n%s, %v round trip added, %d objects of 4 KiB:\n", what, rtt(), objects)
	fmt.Printf("| in flight | wall | objects/s |\n|---:|---:|---:|\n")
	for _, inflight := range []int{1, 4, 16, 32} {
		b := open(fmt.Sprintf("puts%d", inflight))
		d := puts(t, b, objects, inflight)
		fmt.Printf("| %d | %.2f s | %.0f |\n", inflight, d.Seconds(), float64(objects)/d.Seconds())
	}
	def := max(4, 2*runtime.GOMAXPROCS(0))
	fmt.Printf("\nbackup of %d files of 1–3 KiB (one piece each), to the same:\n| concurrency | wall |\n|---|---:|\n", files)
	src := filepath.Join(t.TempDir(), "src")
	for i := range files {
		dir := filepath.Join(src, fmt.Sprintf("d%02d", i%20))
		os.MkdirAll(dir, 0o700)
		os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%04d", i)), bytes.Repeat([]byte(fmt.Sprintf("file %d ", i)), 100+i%200), 0o600)
	}
	b0 := open("caps")
	tuned := b0.Capabilities().Transfers
	for _, c := range []struct {
		name string
		n    int
	}{{fmt.Sprintf("default (%d)", def), def}, {fmt.Sprintf("Capabilities.Transfers (%d)", tuned), tuned}} {
		if c.n <= 0 {
			continue
		}
		b := open("backup" + strconv.Itoa(c.n))
		key := backupkey.New()
		repo, err := repository.Init(t.Context(), b, key)
		if err != nil {
			t.Fatal(err)
		}
		repo.SetConcurrency(c.n)
		start := time.Now()
		if _, err := repo.Backup(t.Context(), []string{src}, repository.BackupOptions{Host: "bench"}); err != nil {
			t.Fatal(err)
		}
		fmt.Printf("| %s | %.2f s |\n", c.name, time.Since(start).Seconds())
	}
}

func puts(t *testing.T, b storage.Backend, n, inflight int) time.Duration {
	data := bytes.Repeat([]byte("x"), 4096)
	work := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	start := time.Now()
	for range inflight {
		wg.Go(func() {
			for i := range work {
				if err := b.Put(context.Background(), fmt.Sprintf("data/%03d/%06d", i%256, i), bytes.NewReader(data), int64(len(data))); err != nil {
					mu.Lock()
					first = err
					mu.Unlock()
				}
			}
		})
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	if first != nil {
		t.Fatal(first)
	}
	return time.Since(start)
}
