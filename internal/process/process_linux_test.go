package process

import (
	"syscall"
	"testing"
)

// TestParentDeath: a child started with Start dies with its parent, even
// though it is in a process group of its own.
func TestParentDeath(t *testing.T) {
	p, r, _ := grandchild(t, "parent")
	// SIGKILL the parent alone (not its group, which the grandchild is not
	// in anyway).
	if err := syscall.Kill(p.Pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	p.Wait()
	waitEOF(t, r, "the grandchild outlived its parent")
}
