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

// BenchmarkSealedApply compares a single replica's throughput (64
// concurrent clients, LoginStart entries, every tenth a LoginFinish;
// default settings: batched, state without fsync) without and with a
// sealing key, and the latency of one client waiting for each entry.
//
//	go test ./internal/server/replica -run '^$' -bench SealedApply -benchtime 4000x -count 3
func BenchmarkSealedApply(b *testing.B) {
	for _, sealed := range []bool{false, true} {
		name := "plain"
		if sealed {
			name = "sealed"
		}
		open := func(b *testing.B) *Replica {
			cfg := fastConfig(b, "bench", b.TempDir(), slog.New(slog.NewTextHandler(io.Discard, nil)))
			cfg.Bootstrap = true
			if sealed {
				cfg.SealingKey = newKeyFile(b)
			}
			r, err := Open(cfg)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { r.Close() })
			waitLeader(b, r)
			return r
		}
		b.Run("concurrent/"+name, func(b *testing.B) {
			r := open(b)
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
		})
		b.Run("sequential/"+name, func(b *testing.B) {
			r := open(b)
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
