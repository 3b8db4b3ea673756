package state

import (
	"bytes"
	"math/rand/v2"
	"testing"
	"time"
)

func TestHangHunt(t *testing.T) {
	seeds := commandSeeds(t)
	rng := rand.New(rand.NewPCG(1, 2))
	deadline := time.Now().Add(20 * time.Second)
	n := 0
	for time.Now().Before(deadline) {
		b := bytes.Clone(seeds[rng.IntN(len(seeds))])
		for k := rng.IntN(8); k >= 0; k-- {
			switch rng.IntN(4) {
			case 0:
				if len(b) > 0 {
					b[rng.IntN(len(b))] = byte(rng.IntN(256))
				}
			case 1:
				if len(b) > 0 {
					b = b[:rng.IntN(len(b))]
				}
			case 2:
				b = append(b, bytes.Repeat([]byte{byte(rng.IntN(256))}, rng.IntN(300))...)
			case 3:
				i := rng.IntN(len(b) + 1)
				b = append(b[:i:i], append([]byte{byte(rng.IntN(256)), byte(rng.IntN(256))}, b[i:]...)...)
			}
		}
		start := time.Now()
		var c Command
		if err := c.UnmarshalBinary(b); err == nil {
			again, err := c.MarshalBinary()
			if err != nil || !bytes.Equal(again, b) {
				t.Fatalf("%x", b)
			}
			_ = c.String()
		}
		if d := time.Since(start); d > 100*time.Millisecond {
			t.Fatalf("slow %v: %x", d, b)
		}
		n++
	}
	t.Logf("%d inputs", n)
}
