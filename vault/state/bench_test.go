package state

import (
	"fmt"
	"path/filepath"
	"testing"
)

// BenchmarkMachineApply measures the state machine alone (no Raft): LoginStart
// entries on 64 records, applied one transaction per entry or 64 per
// transaction, with and without fsync.
//
//	go test ./vault/state -run '^$' -bench MachineApply
func BenchmarkMachineApply(b *testing.B) {
	for _, noSync := range []bool{false, true} {
		for _, batch := range []int{1, 64} {
			name := fmt.Sprintf("fsync/batch%d", batch)
			if noSync {
				name = fmt.Sprintf("nosync/batch%d", batch)
			}
			b.Run(name, func(b *testing.B) {
				h := newHarness(b)
				h.m.Close()
				m, err := Open(filepath.Join(b.TempDir(), "s.db"), Options{NoSync: noSync})
				if err != nil {
					b.Fatal(err)
				}
				defer m.Close()
				h.m = m
				const records = 64
				for i := range records {
					h.rec[1] = byte(i)
					c := h.cmd(&RegisterCheck{})
					h.applyCmd(c)
					h.applyCmd(h.cmd(&Register{Epoch: 1, GuessLimit: MaxGuessLimit, Record: testRecord(1)}))
				}
				entries := make([]Entry, 0, batch)
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					h.rec[1] = byte(i % records)
					op := Op(&LoginStart{Epoch: 1, LoginID: loginID(byte(i)), ExpectedMAC: mac(1)})
					if (i/records)%10 == 9 {
						op = &LoginFinish{LoginID: loginID(byte(i - records)), ClientMAC: mac(1)}
					}
					data, _ := h.cmd(op).MarshalBinary()
					h.index++
					entries = append(entries, Entry{Index: h.index, Term: 1, Data: data})
					if len(entries) == batch || i == b.N-1 {
						for _, r := range m.ApplyBatch(entries) {
							if e, ok := r.(*Error); ok {
								b.Fatalf("entry: %v", e)
							}
						}
						entries = entries[:0]
					}
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "entries/s")
			})
		}
	}
}
