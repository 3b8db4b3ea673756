package pake

import (
	"fmt"
)

// KSFAlgorithm is the only key-stretching function Coffer uses, as it is
// named in the wire message KSFParams.algorithm.
const KSFAlgorithm = "argon2id"

// KSF is an Argon2id cost profile for OPAQUE's key stretching (RFC 9807
// §3.3.2 and PROTOCOL.md §1). The salt (16 zero bytes) and the output length
// (64 bytes) are fixed; only the cost varies. A profile is chosen at
// registration, stored with the account and handed back to the client at
// every login: registration and login must use the very same profile.
//
// The fields are those of the wire message KSFParams (vault.proto); convert
// with ParseKSF and KSFAlgorithm.
type KSF struct {
	// Time is Argon2id's number of passes (t).
	Time uint32
	// MemoryKiB is Argon2id's memory size in KiB (m).
	MemoryKiB uint32
	// Threads is Argon2id's degree of parallelism, the number of lanes (p).
	Threads uint32
}

// Bounds of PROTOCOL.md §1. A client refuses a profile outside them, so a
// malicious vault can neither weaken its key stretching nor exhaust it.
const (
	MinKSFTime      = 1
	MinKSFMemoryKiB = 19 * 1024 // 19 MiB
	MaxKSFTime      = 16
	MaxKSFMemoryKiB = 4 * 1024 * 1024 // 4 GiB
	MaxKSFThreads   = 16
)

var (
	// DefaultKSF is the profile new registrations use: Argon2id with t=2,
	// m=256 MiB, p=4. pake/README.md has the measurements behind it: about
	// 0.2 s on one 2-core server (~0.5–0.9 s on a mid-range phone), within
	// the 256 MiB a phone app can count on, and each offline guess by someone
	// holding the vault's OPRF seed and a record costs as much.
	DefaultKSF = KSF{Time: 2, MemoryKiB: 256 * 1024, Threads: 4}

	// MemoryConstrainedKSF is RFC 9106 §4's second recommended option
	// (Argon2id t=3, m=64 MiB, p=4), which is the default of
	// @serenity-kit/opaque 1.1.0 ("memory-constrained", used when
	// keyStretching is omitted). With Coffer's fixed salt (16 zero bytes)
	// and output (64 bytes) — serenity-kit's too — an account registered
	// by a serenity-kit client with its defaults is stored with this
	// profile, and Coffer's client logs in to it (and the other way round).
	// Any other profile works with serenity-kit through its
	// {"argon2id-custom": {iterations, memory, parallelism}} option.
	MemoryConstrainedKSF = KSF{Time: 3, MemoryKiB: 64 * 1024, Threads: 4}

	// TestKSF is a tiny profile for tests and load generators. It is below
	// the floor: only a Client with AllowWeakKSF (or ValidateAllowWeak)
	// accepts it. Never use it for a real account.
	TestKSF = KSF{Time: 1, MemoryKiB: 64, Threads: 1}
)

// ParseKSF builds a KSF from the fields of the wire message KSFParams. It
// refuses an algorithm other than KSFAlgorithm but does not check the
// bounds: Validate (or a Client, when it uses the profile) does.
func ParseKSF(algorithm string, time, memoryKiB, threads uint32) (KSF, error) {
	if algorithm != KSFAlgorithm {
		return KSF{}, fmt.Errorf("%w: unknown algorithm (want %q)", ErrKSF, KSFAlgorithm)
	}
	return KSF{Time: time, MemoryKiB: memoryKiB, Threads: threads}, nil
}

// Validate checks the profile against the floor and the ceiling of
// PROTOCOL.md §1: 1 ≤ t ≤ 16, 19 MiB ≤ m ≤ 4 GiB, 1 ≤ p ≤ 16.
func (k KSF) Validate() error {
	if err := k.ValidateAllowWeak(); err != nil {
		return err
	}
	if k.Time < MinKSFTime || k.MemoryKiB < MinKSFMemoryKiB {
		return fmt.Errorf("%w: %v is below the floor (t ≥ %d, m ≥ %d MiB)", ErrKSF, k, MinKSFTime, MinKSFMemoryKiB/1024)
	}
	return nil
}

// ValidateAllowWeak checks the ceiling and what Argon2id itself requires
// (t ≥ 1, p ≥ 1, m ≥ 8·p KiB) but not the floor. It is for tests, load
// generators and explicitly enabled development setups only.
func (k KSF) ValidateAllowWeak() error {
	switch {
	case k.Time < 1 || k.Threads < 1:
		return fmt.Errorf("%w: %v: time and threads must be at least 1", ErrKSF, k)
	case k.Time > MaxKSFTime || k.MemoryKiB > MaxKSFMemoryKiB || k.Threads > MaxKSFThreads:
		return fmt.Errorf("%w: %v is above the ceiling (t ≤ %d, m ≤ %d GiB, p ≤ %d)",
			ErrKSF, k, MaxKSFTime, MaxKSFMemoryKiB/(1024*1024), MaxKSFThreads)
	case uint64(k.MemoryKiB) < 8*uint64(k.Threads):
		return fmt.Errorf("%w: %v: Argon2id needs m ≥ 8·p KiB", ErrKSF, k)
	}
	return nil
}

// String describes the profile, e.g. "argon2id t=2 m=262144KiB p=4".
func (k KSF) String() string {
	return fmt.Sprintf("%s t=%d m=%dKiB p=%d", KSFAlgorithm, k.Time, k.MemoryKiB, k.Threads)
}
