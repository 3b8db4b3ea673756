package toprf

import (
	"encoding/hex"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/bytemare/ecc"
)

// TestRFC9497ProofVectors checks generateProof and verifyProof against the
// DLEQ proofs of RFC 9497 Appendix A.1.2 (ristretto255-SHA512, VOPRF mode,
// contextString "OPRFV1-\x01-ristretto255-SHA512"), single and batched:
// with the vector's nonce r the proof is byte for byte the RFC's, and it
// verifies; a tampered proof does not.
func TestRFC9497ProofVectors(t *testing.T) {
	b, err := os.ReadFile("testdata/rfc9497_voprf_ristretto255.json")
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Suite struct {
			Identifier string `json:"identifier"`
			Mode       int    `json:"mode"`
			SkSm       string `json:"skSm"`
			PkSm       string `json:"pkSm"`
			Vectors    []struct {
				BlindedElement    string
				EvaluationElement string
				Proof             struct {
					Proof string `json:"proof"`
					R     string `json:"r"`
				}
			} `json:"vectors"`
		} `json:"suite"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	if f.Suite.Identifier != "ristretto255-SHA512" || f.Suite.Mode != 1 || len(f.Suite.Vectors) != 3 {
		t.Fatalf("unexpected vector file: %s mode %d, %d vectors", f.Suite.Identifier, f.Suite.Mode, len(f.Suite.Vectors))
	}
	const ctx = "OPRFV1-\x01-ristretto255-SHA512"
	k := mustScalar(t, f.Suite.SkSm)
	pk := mustElement(t, f.Suite.PkSm)
	if !group.Base().Multiply(k).Equal(pk) {
		t.Fatal("pkSm != skSm·G")
	}
	elems := func(s string) []*ecc.Element {
		var out []*ecc.Element
		for _, h := range strings.Split(s, ",") {
			out = append(out, mustElement(t, h))
		}
		return out
	}
	for i, v := range f.Suite.Vectors {
		c, d := elems(v.BlindedElement), elems(v.EvaluationElement)
		for j := range c {
			if !c[j].Copy().Multiply(k).Equal(d[j]) {
				t.Fatalf("vector %d: D != k·C", i)
			}
		}
		proof := generateProof(ctx, k, group.Base(), pk, c, d, mustScalar(t, v.Proof.R))
		if hex.EncodeToString(proof) != v.Proof.Proof {
			t.Fatalf("vector %d: proof\n got %x\nwant %s", i, proof, v.Proof.Proof)
		}
		if err := verifyProof(ctx, group.Base(), pk, c, d, proof); err != nil {
			t.Fatalf("vector %d: %v", i, err)
		}
		proof[3] ^= 1
		if err := verifyProof(ctx, group.Base(), pk, c, d, proof); err == nil {
			t.Fatalf("vector %d: tampered proof verifies", i)
		}
	}
}

func mustScalar(t testing.TB, h string) *ecc.Scalar {
	t.Helper()
	b, err := hex.DecodeString(h)
	if err != nil {
		t.Fatal(err)
	}
	s, err := decodeScalar(b)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mustElement(t testing.TB, h string) *ecc.Element {
	t.Helper()
	b, err := hex.DecodeString(h)
	if err != nil {
		t.Fatal(err)
	}
	e, err := decodeElement(b)
	if err != nil {
		t.Fatal(err)
	}
	return e
}
