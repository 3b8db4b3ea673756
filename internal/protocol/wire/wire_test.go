package wire

import (
	"errors"
	"fmt"
	"testing"

	"connectrpc.com/connect"
)

func TestNotLeaderErrorCarriesHint(t *testing.T) {
	err := fmt.Errorf("calling replica: %w", NotLeaderError("https://127.0.0.1:7001"))
	if got := connect.CodeOf(err); got != connect.CodeUnavailable {
		t.Fatalf("code %v, want Unavailable", got)
	}
	if got := LeaderHint(err); got != "https://127.0.0.1:7001" {
		t.Fatalf("LeaderHint = %q", got)
	}
}

func TestNoLeaderNoHint(t *testing.T) {
	err := NotLeaderError("")
	if _, ok := err.Meta()[LeaderHeader]; ok {
		t.Fatal("an empty leader URL set the header")
	}
	if got := LeaderHint(err); got != "" {
		t.Fatalf("LeaderHint = %q, want none", got)
	}
	// Another code never yields a hint, whatever its metadata says.
	other := connect.NewError(connect.CodeInternal, errors.New("x"))
	other.Meta().Set(LeaderHeader, "https://elsewhere")
	if got := LeaderHint(other); got != "" {
		t.Fatalf("LeaderHint of a non-Unavailable error = %q", got)
	}
}
