package container

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// A test vector (FORMAT.md section 5): "field: value" lines, an empty line,
// then the container.
type testVector struct {
	expect    string
	key       [32]byte
	kind      Kind
	ref       [32]byte
	size      int
	sum       string
	container []byte
}

func parseVector(b []byte) (*testVector, error) {
	text, data, ok := bytes.Cut(b, []byte("\n\n"))
	if !ok {
		return nil, errors.New("no empty line after the fields")
	}
	fields := map[string]string{}
	for _, line := range strings.Split(string(text), "\n") {
		k, v, ok := strings.Cut(line, ": ")
		if !ok {
			return nil, fmt.Errorf("bad line %q", line)
		}
		fields[k] = v
	}
	v := &testVector{expect: fields["expect"], container: data}
	key, err := hex.DecodeString(fields["key"])
	if err != nil || len(key) != 32 {
		return nil, fmt.Errorf("bad key %q", fields["key"])
	}
	v.key = [32]byte(key)
	repo, err := hex.DecodeString(fields["repo"])
	if err != nil || len(repo) != 16 {
		return nil, fmt.Errorf("bad repo %q", fields["repo"])
	}
	v.ref = Ref([16]byte(repo), fields["name"])
	for k := KindConfig; k <= KindLock; k++ {
		if k.String() == fields["kind"] {
			v.kind = k
		}
	}
	if v.kind == 0 {
		return nil, fmt.Errorf("bad kind %q", fields["kind"])
	}
	switch v.expect {
	case "ok":
		if v.size, err = strconv.Atoi(fields["plaintext-size"]); err != nil {
			return nil, err
		}
		v.sum = fields["plaintext-sha256"]
	case "wrong_key", "integrity", "unsupported_version":
	default:
		return nil, fmt.Errorf("bad expect %q", v.expect)
	}
	return v, nil
}

func TestVectors(t *testing.T) {
	files, err := filepath.Glob("testdata/*_*")
	if err != nil || len(files) < 40 {
		t.Fatalf("found %d vectors (%v)", len(files), err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			v, err := parseVector(b)
			if err != nil {
				t.Fatal(err)
			}
			if strings.HasPrefix(filepath.Base(f), "good_") != (v.expect == "ok") {
				t.Fatalf("name and expect %q disagree", v.expect)
			}
			plain, _, err := openBoth(t, &v.key, v.kind, v.ref, v.container)
			switch v.expect {
			case "ok":
				if err != nil {
					t.Fatal(err)
				}
				if sum := fmt.Sprintf("%x", sha256.Sum256(plain)); len(plain) != v.size || sum != v.sum {
					t.Fatalf("plaintext of %d bytes with SHA-256 %s, want %d bytes with %s", len(plain), sum, v.size, v.sum)
				}
			case "wrong_key":
				wantErr(t, err, ErrWrongKey, "")
			case "integrity":
				wantErr(t, err, ErrIntegrity, "")
			case "unsupported_version":
				wantErr(t, err, ErrUnsupportedVersion, "")
			}
			if err != nil {
				t.Log(err)
			}
		})
	}
}
