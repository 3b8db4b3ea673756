package replica

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"

	"github.com/cofferhq/coffer/internal/server/vaultstate"
)

// BenchmarkApplyLoginStart measures a single replica's throughput for
// LoginStart entries proposed by 64 concurrent clients (each on its own
// record; every tenth entry is a successful LoginFinish so budgets never run
// out). Each Apply returns after commit and apply, as the vault needs.
//
//	go test ./internal/server/replica -run '^$' -bench ApplyLoginStart -benchtime 5000x
func BenchmarkApplyLoginStart(b *testing.B) {
	for _, bc := range []struct {
		name    string
		batched bool
		noSync  bool
	}{
		{"batched/fsync", true, false},
		{"unbatched/fsync", false, false},
		{"batched/nosync", true, true},
		{"unbatched/nosync", false, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			cfg := fastConfig(b, "bench", b.TempDir(), slog.New(slog.NewTextHandler(io.Discard, nil)))
			cfg.Bootstrap = true
			cfg.DisableBatching = !bc.batched
			cfg.SyncState = !bc.noSync
			r, err := Open(cfg)
			if err != nil {
				b.Fatal(err)
			}
			defer r.Close()
			waitLeader(b, r)
			var workers atomic.Uint32
			b.SetParallelism(32) // 32 × GOMAXPROCS goroutines
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				var rec vaultstate.RecordID
				binary.BigEndian.PutUint32(rec[:], workers.Add(1))
				epoch := register(b, r, rec, 1)
				m := bytes.Repeat([]byte{7}, 64)
				for i := 0; pb.Next(); i++ {
					var op vaultstate.Op = &vaultstate.LoginStart{Epoch: epoch, LoginID: vaultstate.LoginID{byte(i)}, MACHash: vaultstate.HashMAC(m)}
					if i%10 == 9 {
						op = &vaultstate.LoginFinish{LoginID: vaultstate.LoginID{byte(i - 1)}, ClientMAC: m}
					}
					res, err := r.Apply(ctx, command(rec, op))
					if err != nil {
						b.Error(err)
						return
					}
					if e, ok := res.(*vaultstate.Error); ok {
						b.Errorf("entry %d: %v", i, e)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "entries/s")
			if n := r.fsm.batches.Load(); n > 0 {
				b.ReportMetric(float64(r.fsm.entries.Load())/float64(n), "entries/batch")
			}
		})
	}
}

// BenchmarkApplyLoginStart3 is BenchmarkApplyLoginStart's batched case on a
// three-replica fleet on loopback: each entry is committed by two of three.
func BenchmarkApplyLoginStart3(b *testing.B) {
	rs, _ := cluster(b, 3, func(c *Config) { c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil)) })
	r := leaderOf(b, rs)
	var workers atomic.Uint32
	b.SetParallelism(32)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		var rec vaultstate.RecordID
		binary.BigEndian.PutUint32(rec[:], workers.Add(1))
		epoch := register(b, r, rec, 1)
		m := bytes.Repeat([]byte{7}, 64)
		for i := 0; pb.Next(); i++ {
			var op vaultstate.Op = &vaultstate.LoginStart{Epoch: epoch, LoginID: vaultstate.LoginID{byte(i)}, MACHash: vaultstate.HashMAC(m)}
			if i%10 == 9 {
				op = &vaultstate.LoginFinish{LoginID: vaultstate.LoginID{byte(i - 1)}, ClientMAC: m}
			}
			if _, err := r.Apply(ctx, command(rec, op)); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "entries/s")
}

// BenchmarkApplySequential is one client waiting for each entry: latency.
func BenchmarkApplySequential(b *testing.B) {
	for _, syncState := range []bool{false, true} {
		name := "nosync"
		if syncState {
			name = "fsync"
		}
		b.Run(name, func(b *testing.B) {
			cfg := fastConfig(b, "bench", b.TempDir(), slog.New(slog.NewTextHandler(io.Discard, nil)))
			cfg.Bootstrap = true
			cfg.SyncState = syncState
			r, err := Open(cfg)
			if err != nil {
				b.Fatal(err)
			}
			defer r.Close()
			waitLeader(b, r)
			rec := recID(1)
			register(b, r, rec, 1)
			ctx := context.Background()
			b.ResetTimer()
			for range b.N {
				if _, err := r.Apply(ctx, command(rec, &vaultstate.Status{})); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/entry")
		})
	}
}
