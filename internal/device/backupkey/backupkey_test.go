package backupkey

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestDigitsRoundTrip(t *testing.T) {
	for range 100 {
		k := New()
		d := k.Digits()
		if len(d) != 79 || strings.Count(d, " ") != 15 {
			t.Fatalf("bad layout %q", d)
		}
		for _, variant := range []string{
			d,
			strings.ToUpper(d),
			strings.ReplaceAll(d, " ", ""),
			strings.ReplaceAll(d, " ", "-"),
			strings.ReplaceAll(d, " ", "\n"),
			"  " + strings.ReplaceAll(d, " ", "\r\n\t") + "\n",
		} {
			p, err := Parse(variant)
			if err != nil {
				t.Fatalf("Parse(%q): %v", variant, err)
			}
			if !p.Equal(k) {
				t.Fatalf("Parse(%q) gave another key", variant)
			}
		}
	}
}

func TestKnownKey(t *testing.T) {
	var b [32]byte
	for i := range b {
		b[i] = byte(i * 7)
	}
	k, _ := FromBytes(b[:])
	want := "0007 0e15 1c23 2a31 383f 464d 545b 6269 7077 7e85 8c93 9aa1 a8af b6bd c4cb d2d9"
	if got := k.Digits(); got != want {
		t.Fatalf("Digits = %q, want %q", got, want)
	}
}

func TestParseErrors(t *testing.T) {
	good := New().Digits()
	compact := strings.ReplaceAll(good, " ", "")
	cases := []struct {
		in, want string
	}{
		{"", "empty"},
		{"   ", "empty"},
		{compact[:63], "63 digits, want 64 (1 missing)"},
		{compact + "0", "more than 64 digits"},
		{"g" + compact[1:], "character 1 is 'g'"},
		{compact[:10] + "O" + compact[11:], "the letter O"},
		{good[:5] + "x" + good[6:], "character 6 is 'x'"},
	}
	for _, c := range cases {
		_, err := Parse(c.in)
		if err == nil || !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Parse(%q) = %v, want error containing %q", c.in, err, c.want)
		}
	}
}

func TestErrorsDoNotLeakDigits(t *testing.T) {
	k := New()
	compact := strings.ReplaceAll(k.Digits(), " ", "")
	_, err := Parse(compact[:40] + "z" + compact[41:])
	if err == nil {
		t.Fatal("no error")
	}
	if strings.Contains(err.Error(), compact[:8]) || strings.Contains(err.Error(), compact[50:58]) {
		t.Fatalf("error leaks key digits: %v", err)
	}
}

func TestStringDoesNotLeak(t *testing.T) {
	k := New()
	for _, s := range []string{fmt.Sprint(k), fmt.Sprintf("%v %+v %#v %s", k, k, k, k)} {
		if strings.Contains(s, k.Digits()[:4]) && strings.Contains(s, k.Digits()[5:9]) {
			t.Fatalf("formatting leaks key: %q", s)
		}
	}
}

func TestFingerprintStable(t *testing.T) {
	k := New()
	k2, _ := FromBytes(k.Bytes()[:])
	if k.Fingerprint() != k2.Fingerprint() || len(k.Fingerprint()) != 16 {
		t.Fatal("fingerprint unstable")
	}
	if New().Fingerprint() == k.Fingerprint() {
		t.Fatal("fingerprint collision")
	}
}

func FuzzParse(f *testing.F) {
	f.Add(New().Digits())
	f.Add("")
	f.Add("0000-0000")
	f.Fuzz(func(t *testing.T, s string) {
		k, err := Parse(s)
		if err != nil {
			return
		}
		k2, err := Parse(k.Digits())
		if err != nil || !k2.Equal(k) {
			t.Fatalf("round trip failed for %q", s)
		}
	})
}
