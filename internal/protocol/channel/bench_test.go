package channel

import "testing"

func BenchmarkSeal(b *testing.B) {
	k := newKey(b)
	pub := k.PublicKey()
	req := make([]byte, 200)
	for b.Loop() {
		if _, _, err := Seal(pub, testFleetID, "alice", req); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkOpen(b *testing.B) {
	k := newKey(b)
	r := NewRecipient(k, testFleetID)
	sealed, _, _ := Seal(k.PublicKey(), testFleetID, "alice", make([]byte, 200))
	for b.Loop() {
		if _, _, err := r.Open(sealed, "alice"); err != nil {
			b.Fatal(err)
		}
	}
}
