package bundle

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hpke"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// The test vectors in testdata/ are written by
//
//	go test ./internal/protocol/bundle -run TestVectors -update
//
// from fixed seeds (Ed25519 signatures and HPKE DeriveKeyPair are
// deterministic), so the output is the same on every run; TestVectors fails
// if the committed files differ from what the generator writes, then opens
// every file and checks the stated outcome.
//
// A file is "field: value" lines, an empty line, then the signed bundle
// file to the end:
//
//	expect: ok | malformed | bad_signature | unknown_version | not_yet_valid | expired
//	root: the pinned root public key (FormatRootPublicKey)
//	now: the verification time (RFC 3339)
//	comment: what the vector exercises
//	fleet-id, hpke-public-key-sha256, opaque-server-public-key,
//	not-before, not-after: the expected content (only with expect: ok)
var update = flag.Bool("update", false, "rewrite fleet/testdata from the generator")

func seedKey(name string) ed25519.PrivateKey {
	s := sha256.Sum256([]byte("coffer fleet test vector " + name))
	return ed25519.NewKeyFromSeed(s[:])
}

func testBundle(t testing.TB) *Bundle {
	k, err := hpke.MLKEM768X25519().DeriveKeyPair([]byte("coffer fleet test vector hpke key"))
	if err != nil {
		t.Fatal(err)
	}
	opq := sha256.Sum256([]byte("coffer fleet test vector opaque key"))
	return &Bundle{
		Version:               1,
		FleetID:               [16]byte{0x0f, 0x1e, 0x2d, 0x3c, 0x4b, 0x5a, 0x69, 0x78, 0x87, 0x96, 0xa5, 0xb4, 0xc3, 0xd2, 0xe1, 0xf0},
		HPKEPublicKey:         k.PublicKey().Bytes(),
		OPAQUEServerPublicKey: opq[:],
		NotBefore:             time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:              time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC),
	}
}

type vector struct {
	name    string
	expect  string
	root    ed25519.PublicKey
	now     time.Time
	comment string
	signed  []byte
	want    *Bundle // with expect: ok
}

// signRaw signs arbitrary inner bytes as a bundle, for vectors whose content
// Sign would refuse to make.
func signRaw(inner []byte, root ed25519.PrivateKey, context string) []byte {
	sig := ed25519.Sign(root, append([]byte(context), inner...))
	out, _ := json.Marshal(signedFile{Bundle: b64.EncodeToString(inner), Signature: b64.EncodeToString(sig)})
	return append(out, '\n')
}

func innerJSON(b *Bundle) map[string]any {
	return map[string]any{
		"version":                  b.Version,
		"fleet_id":                 hex.EncodeToString(b.FleetID[:]),
		"hpke_public_key":          b64.EncodeToString(b.HPKEPublicKey),
		"opaque_server_public_key": b64.EncodeToString(b.OPAQUEServerPublicKey),
		"not_before":               b.NotBefore.UTC().Format(time.RFC3339),
		"not_after":                b.NotAfter.UTC().Format(time.RFC3339),
	}
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func makeVectors(t testing.TB) []vector {
	root := seedKey("root")
	other := seedKey("other root")
	pub := root.Public().(ed25519.PublicKey)
	b := testBundle(t)
	good, err := Sign(b, root)
	if err != nil {
		t.Fatal(err)
	}
	mid := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

	var vs []vector
	add := func(name, expect string, now time.Time, comment string, signed []byte) {
		v := vector{name: name, expect: expect, root: pub, now: now, comment: comment, signed: signed}
		if expect == "ok" {
			v.want = b
		}
		vs = append(vs, v)
	}
	add("good_bundle", "ok", mid, "a valid bundle inside its validity period", good)
	add("good_bundle_at_not_after", "ok", b.NotAfter, "not_after is inclusive", good)
	add("good_bundle_at_not_before", "ok", b.NotBefore, "not_before is inclusive", good)

	var f signedFile
	_ = json.Unmarshal(good, &f)
	sig, _ := b64.DecodeString(f.Signature)
	sig[10] ^= 0x01
	add("fail_bad_signature", "bad_signature", mid, "one bit of the signature flipped",
		mustJSON(signedFile{Bundle: f.Bundle, Signature: b64.EncodeToString(sig)}))

	tampered := *b
	tampered.HPKEPublicKey = bytes.Clone(b.HPKEPublicKey)
	k2, _ := hpke.MLKEM768X25519().DeriveKeyPair([]byte("an attacker's key"))
	tampered.HPKEPublicKey = k2.PublicKey().Bytes()
	swapped, _ := Sign(&tampered, root)
	var f2 signedFile
	_ = json.Unmarshal(swapped, &f2)
	add("fail_swapped_hpke_key", "bad_signature", mid, "the HPKE key replaced, the original signature kept",
		mustJSON(signedFile{Bundle: f2.Bundle, Signature: f.Signature}))

	wrong, _ := Sign(b, other)
	add("fail_wrong_root", "bad_signature", mid, "a well-formed bundle signed by another fleet's root", wrong)
	add("fail_no_context", "bad_signature", mid, "signature over the bundle bytes without the \"coffer fleet bundle v1\\n\" prefix",
		signRaw(mustJSON(innerJSON(b)), root, ""))

	add("fail_expired", "expired", b.NotAfter.Add(time.Second), "one second after not_after", good)
	add("fail_not_yet_valid", "not_yet_valid", b.NotBefore.Add(-time.Second), "one second before not_before", good)

	v2 := innerJSON(b)
	v2["version"] = 2
	v2["something_new"] = "x"
	add("fail_unknown_version", "unknown_version", mid, "version 2, properly signed", signRaw(mustJSON(v2), root, signatureContext))

	noVersion := innerJSON(b)
	delete(noVersion, "version")
	add("fail_no_version", "malformed", mid, "no version member, properly signed", signRaw(mustJSON(noVersion), root, signatureContext))

	short := innerJSON(b)
	short["hpke_public_key"] = b64.EncodeToString(b.HPKEPublicKey[:1215])
	add("fail_short_hpke_key", "malformed", mid, "HPKE key of 1215 bytes, properly signed", signRaw(mustJSON(short), root, signatureContext))

	badID := innerJSON(b)
	badID["fleet_id"] = strings.ToUpper(badID["fleet_id"].(string))
	add("fail_uppercase_fleet_id", "malformed", mid, "fleet_id in uppercase hex, properly signed", signRaw(mustJSON(badID), root, signatureContext))

	extra := innerJSON(b)
	extra["comment"] = "hello"
	add("fail_unknown_field", "malformed", mid, "an unknown member in a version 1 bundle, properly signed", signRaw(mustJSON(extra), root, signatureContext))

	inner := mustJSON(innerJSON(b))
	dup := append([]byte(`{"fleet_id":"00000000000000000000000000000001",`), inner[1:]...)
	add("fail_duplicate_field", "malformed", mid, "fleet_id twice, properly signed", signRaw(dup, root, signatureContext))

	backwards := innerJSON(b)
	backwards["not_before"], backwards["not_after"] = backwards["not_after"], backwards["not_before"]
	add("fail_backwards_validity", "malformed", mid, "not_after before not_before, properly signed", signRaw(mustJSON(backwards), root, signatureContext))

	add("fail_truncated", "malformed", mid, "the signed file cut in half", good[:len(good)/2])
	add("fail_trailing_data", "malformed", mid, "a second JSON object after the signed file", append(bytes.Clone(good), []byte("{}\n")...))
	add("fail_trailing_garbage", "malformed", mid, "bytes that are not JSON after the signed file", append(bytes.Clone(good), []byte("xyz")...))
	add("fail_signature_bad_base64", "malformed", mid, "signature base64 with a stray character at the end",
		mustJSON(signedFile{Bundle: f.Bundle, Signature: f.Signature + "A"}))
	return vs
}

func (v *vector) encode() []byte {
	var w bytes.Buffer
	fmt.Fprintf(&w, "expect: %s\n", v.expect)
	fmt.Fprintf(&w, "root: %s\n", FormatRootPublicKey(v.root))
	fmt.Fprintf(&w, "now: %s\n", v.now.UTC().Format(time.RFC3339))
	if v.want != nil {
		h := sha256.Sum256(v.want.HPKEPublicKey)
		fmt.Fprintf(&w, "fleet-id: %x\n", v.want.FleetID)
		fmt.Fprintf(&w, "hpke-public-key-sha256: %x\n", h)
		fmt.Fprintf(&w, "opaque-server-public-key: %x\n", v.want.OPAQUEServerPublicKey)
		fmt.Fprintf(&w, "not-before: %s\n", v.want.NotBefore.UTC().Format(time.RFC3339))
		fmt.Fprintf(&w, "not-after: %s\n", v.want.NotAfter.UTC().Format(time.RFC3339))
	}
	fmt.Fprintf(&w, "comment: %s\n\n", v.comment)
	w.Write(v.signed)
	return w.Bytes()
}

func TestVectors(t *testing.T) {
	vs := makeVectors(t)
	if *update {
		old, _ := filepath.Glob("testdata/*_*")
		for _, f := range old {
			os.Remove(f)
		}
		for _, v := range vs {
			if err := os.WriteFile(filepath.Join("testdata", v.name), v.encode(), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	var names []string
	for _, v := range vs {
		names = append(names, v.name)
		got, err := os.ReadFile(filepath.Join("testdata", v.name))
		if err != nil {
			t.Fatalf("%v (run: go test ./internal/protocol/bundle -run TestVectors -update)", err)
		}
		if !bytes.Equal(got, v.encode()) {
			t.Errorf("testdata/%s differs from the generator's output (run: go test ./internal/protocol/bundle -run TestVectors -update)", v.name)
		}
	}
	files, _ := filepath.Glob("testdata/*_*")
	for i := range files {
		files[i] = filepath.Base(files[i])
	}
	sort.Strings(files)
	sort.Strings(names)
	if strings.Join(files, ",") != strings.Join(names, ",") {
		t.Errorf("testdata holds %v, the generator writes %v", files, names)
	}
	for _, name := range files {
		t.Run(name, func(t *testing.T) { checkVectorFile(t, filepath.Join("testdata", name)) })
	}
}

// checkVectorFile checks one file using only its text, as another
// implementation would.
func checkVectorFile(t *testing.T, path string) {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	head, signed, ok := bytes.Cut(data, []byte("\n\n"))
	if !ok {
		t.Fatal("no empty line after the fields")
	}
	fields := map[string]string{}
	for _, line := range strings.Split(string(head), "\n") {
		k, v, ok := strings.Cut(line, ": ")
		if !ok {
			t.Fatalf("bad line %q", line)
		}
		fields[k] = v
	}
	root, err := ParseRootPublicKey(fields["root"])
	if err != nil {
		t.Fatal(err)
	}
	now, err := time.Parse(time.RFC3339, fields["now"])
	if err != nil {
		t.Fatal(err)
	}
	b, err := Verify(signed, root, now)
	want := map[string]error{
		"malformed":       ErrMalformed,
		"bad_signature":   ErrBadSignature,
		"unknown_version": ErrUnknownVersion,
		"not_yet_valid":   ErrNotYetValid,
		"expired":         ErrExpired,
	}
	if fields["expect"] == "ok" {
		if err != nil {
			t.Fatalf("Verify: %v", err)
		}
		h := sha256.Sum256(b.HPKEPublicKey)
		got := map[string]string{
			"fleet-id":                 hex.EncodeToString(b.FleetID[:]),
			"hpke-public-key-sha256":   hex.EncodeToString(h[:]),
			"opaque-server-public-key": hex.EncodeToString(b.OPAQUEServerPublicKey),
			"not-before":               b.NotBefore.Format(time.RFC3339),
			"not-after":                b.NotAfter.Format(time.RFC3339),
		}
		for k, v := range got {
			if fields[k] != v {
				t.Errorf("%s = %s, want %s", k, v, fields[k])
			}
		}
		return
	}
	wantErr, ok := want[fields["expect"]]
	if !ok {
		t.Fatalf("unknown expect %q", fields["expect"])
	}
	if !errors.Is(err, wantErr) {
		t.Fatalf("Verify error = %v, want %v", err, wantErr)
	}
}
