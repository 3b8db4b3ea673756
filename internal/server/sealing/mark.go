package sealing

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Mark is a replica's high-water mark: the last index and term its state
// machine applied and a digest of the state at that point. Kept somewhere a
// restored disk image does not roll back (a PKCS#11 token: sealing/pkcs11),
// it lets a replica notice at start-up that its disk is older than what it
// had already applied (the rollback defence, SECURITY.md).
type Mark struct {
	Index  uint64
	Term   uint64
	Digest [32]byte
}

// MarkStore keeps a replica's Mark. WriteMark refuses to go backwards.
type MarkStore interface {
	// ReadMark returns the stored mark, the zero Mark if none was written.
	ReadMark() (Mark, error)
	// WriteMark stores m if it does not go back from the stored mark
	// (CheckAdvance); otherwise it returns ErrRollback or ErrMarkConflict
	// and keeps the stored mark.
	WriteMark(m Mark) error
}

var (
	// ErrRollback: a mark lower than the stored one (an older index or
	// term), or a replica's disk older than its stored mark.
	ErrRollback = errors.New("rollback: older than the stored high-water mark")
	// ErrMarkConflict: the same index as the stored mark with another term
	// or state digest (the history forked).
	ErrMarkConflict = errors.New("conflict with the stored high-water mark (same index, other term or state)")
)

// IsZero reports whether m is the zero Mark (nothing stored).
func (m Mark) IsZero() bool { return m == Mark{} }

func (m Mark) String() string {
	return fmt.Sprintf("index %d term %d state %x", m.Index, m.Term, m.Digest[:8])
}

// CheckAdvance returns nil if next may replace m: not a lower index or term,
// and at the same index the same term and digest. Anything replaces the
// zero Mark (nothing stored), a replica's first mark at index 0 included.
func (m Mark) CheckAdvance(next Mark) error {
	switch {
	case m.IsZero():
		return nil
	case next.Index < m.Index || next.Term < m.Term:
		return fmt.Errorf("sealing: mark %v: %w (%v)", next, ErrRollback, m)
	case next.Index == m.Index && next != m:
		return fmt.Errorf("sealing: mark %v: %w (%v)", next, ErrMarkConflict, m)
	}
	return nil
}

const (
	markVersion = 1
	// MarkSize is the length of an encoded Mark.
	MarkSize = 1 + 8 + 8 + 32
)

// MarshalBinary encodes m: version 1 || index u64 || term u64 || digest.
func (m Mark) MarshalBinary() ([]byte, error) {
	b := make([]byte, MarkSize)
	b[0] = markVersion
	binary.BigEndian.PutUint64(b[1:], m.Index)
	binary.BigEndian.PutUint64(b[9:], m.Term)
	copy(b[17:], m.Digest[:])
	return b, nil
}

// UnmarshalBinary decodes what MarshalBinary wrote.
func (m *Mark) UnmarshalBinary(b []byte) error {
	if len(b) != MarkSize || b[0] != markVersion {
		return fmt.Errorf("sealing: mark: %w", ErrFormat)
	}
	m.Index = binary.BigEndian.Uint64(b[1:])
	m.Term = binary.BigEndian.Uint64(b[9:])
	copy(m.Digest[:], b[17:])
	return nil
}
