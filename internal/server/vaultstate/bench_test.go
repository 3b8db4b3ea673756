package vaultstate

import (
	"encoding/binary"
	"fmt"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// BenchmarkMachineApply measures the state machine alone (no Raft): LoginStart
// entries on 64 records, applied one transaction per entry or 64 per
// transaction, with and without fsync.
//
//	go test ./internal/server/vaultstate -run '^$' -bench MachineApply
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
					op := Op(&LoginStart{Epoch: 1, LoginID: loginID(byte(i)), MACHash: HashMAC(mac(1))})
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

// cpuTime is this process's CPU time so far (user + system, every
// goroutine: under group commit the timer's goroutine commits).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkMachineGroupCommit compares a transaction per batch with group
// commit (10 ms) for the small batches a replica gets below saturation,
// on a state the size of a benchmark fleet's: 2,048 live records and
// 100,000 request ids in the replay window. Entries are LoginStarts (every
// tenth round a successful LoginFinish), no fsync (the replica's default).
// cpu-µs/entry counts every goroutine (the timer's commits included), so
// it is the figure to compare; ns/op is the applying goroutine's wall time.
//
// The tight loops ("max") apply as fast as they can, so a 10 ms group
// holds hundreds of entries; the paced ones apply 400 entries/s in
// batches of 2, about what each replica of a 5-replica benchmark fleet
// applies between half load and saturation (bench/vault/README.md), so a
// group holds a few batches (-benchtime 2000x: 5 s per run).
//
//	go test ./internal/server/vaultstate -run '^$' -bench MachineGroupCommit -benchtime 2000x -count 5
func BenchmarkMachineGroupCommit(b *testing.B) {
	intervals := []time.Duration{0, 10 * time.Millisecond, 50 * time.Millisecond}
	for _, c := range []struct {
		batch int
		rate  int // entries/s, 0: as fast as possible
	}{{1, 0}, {4, 0}, {16, 0}, {2, 400}} {
		for _, every := range intervals {
			name := fmt.Sprintf("max/batch%d", c.batch)
			if c.rate > 0 {
				name = fmt.Sprintf("%d-per-s/batch%d", c.rate, c.batch)
			}
			if every > 0 {
				name += fmt.Sprintf("/group-%v", every)
			} else {
				name += "/tx-per-batch"
			}
			b.Run(name, func(b *testing.B) {
				benchGroupCommit(b, c.batch, c.rate, Options{NoSync: true, CommitInterval: every})
			})
			b.Run(name+"/digest", func(b *testing.B) {
				benchGroupCommit(b, c.batch, c.rate, Options{NoSync: true, CommitInterval: every, DigestKey: testDigestKey})
			})
		}
	}
}

func benchGroupCommit(b *testing.B, batch, rate int, opts Options) {
	m, err := Open(filepath.Join(b.TempDir(), "s.db"), opts)
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	const records, replayIDs = 2048, 100_000
	var index, req uint64
	now := t0
	entry := func(rec int, op Op) Entry {
		req++
		c := Command{Time: now, Op: op}
		binary.BigEndian.PutUint64(c.RequestID[8:], req)
		binary.BigEndian.PutUint32(c.RecordID[:], uint32(rec))
		data, err := c.MarshalBinary()
		if err != nil {
			b.Fatal(err)
		}
		index++
		return Entry{Index: index, Term: 1, Data: data}
	}
	var setup []Entry
	flush := func() {
		for _, r := range m.ApplyBatch(setup) {
			if e, ok := r.(*Error); ok {
				b.Fatalf("setup: %v", e)
			}
		}
		setup = setup[:0]
	}
	for i := range records {
		setup = append(setup, entry(i, &RegisterCheck{}), entry(i, &Register{Epoch: 1, GuessLimit: MaxGuessLimit, Record: testRecord(1)}))
		if len(setup) >= 512 {
			flush()
		}
	}
	for i := range replayIDs - 2*records {
		now += 2 // 100,000 ids over 200 s: all within the 10-minute window
		setup = append(setup, entry(i%records, &Status{}))
		if len(setup) >= 512 {
			flush()
		}
	}
	flush()
	if err := m.Commit(); err != nil {
		b.Fatal(err)
	}
	entries := make([]Entry, 0, batch)
	start := cpuTime()
	b.ResetTimer()
	began := time.Now()
	for i := 0; i < b.N; i++ {
		if rate > 0 && i%batch == 0 {
			time.Sleep(time.Until(began.Add(time.Duration(i) * time.Second / time.Duration(rate))))
		}
		now++
		rec := (i * 7919) % records // spread over the file, as real accounts are
		round := i / records
		var op Op = &LoginStart{Epoch: 1, LoginID: loginID(byte(round)), MACHash: HashMAC(mac(1))}
		if round%10 == 9 {
			op = &LoginFinish{LoginID: loginID(byte(round - 1)), ClientMAC: mac(1)}
		}
		entries = append(entries, entry(rec, op))
		if len(entries) == batch || i == b.N-1 {
			for _, r := range m.ApplyBatch(entries) {
				if e, ok := r.(*Error); ok {
					b.Fatalf("entry: %v", e)
				}
			}
			entries = entries[:0]
		}
	}
	if err := m.Commit(); err != nil { // the last group's commit counts too
		b.Fatal(err)
	}
	b.StopTimer()
	b.ReportMetric(float64((cpuTime()-start).Microseconds())/float64(b.N), "cpu-µs/entry")
}
