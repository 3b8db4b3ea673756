package container

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"runtime"
)

// Header layout (FORMAT 2.1).
const (
	offMagic      = 0
	offVersion    = 6
	offSuite      = 7
	offChunkLog2  = 8
	offCompress   = 9
	offKind       = 10
	offReserved   = 11
	offSalt       = 12
	offRef        = 44
	offCommitment = 76
	offMAC        = 108
	offCheck      = 140

	magic          = "COFFER"
	formatVersion  = 1
	suiteAESGCM    = 1
	compressNone   = 0
	compressZstd   = 1
	checkSize      = 16
	saltSize       = 32
	lengthSize     = 4
	tagSize        = 16
	encodingRaw    = 0
	encodingZstd   = 1
	minSealedChunk = 1 + tagSize // encoding byte and tag
	// chunkOverhead is what a chunk adds to its data on the wire.
	chunkOverhead = lengthSize + minSealedChunk
)

const (
	infoCommitment = "coffer v1 commitment"
	infoMAC        = "coffer v1 header mac"
	infoPayload    = "coffer v1 payload"
)

// integrityError returns an error wrapping ErrIntegrity with a reason.
func integrityError(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrIntegrity, fmt.Sprintf(format, args...))
}

// stream is what sealing and opening the chunks of one container need.
type stream struct {
	aead      cipher.AEAD
	aad       [32]byte // SHA-256 of the whole header
	chunkLog2 uint8
	chunkSize int
	compress  bool
}

// keys derives the key commitment, the header MAC and the payload cipher of
// a container from the backup key and the salt in hdr (FORMAT 2.2). When
// writing, it first stores the commitment in hdr; the MAC is computed over
// hdr[:offMAC] as it then stands.
func keys(key *[32]byte, hdr []byte, writing bool) (commitment, mac [32]byte, aead cipher.AEAD, err error) {
	prk, err := hkdf.Extract(sha256.New, key[:], hdr[offSalt:offSalt+saltSize])
	if err != nil {
		return commitment, mac, nil, fmt.Errorf("deriving keys: %w", err)
	}
	defer clear(prk)
	c, err := hkdf.Expand(sha256.New, prk, infoCommitment, 32)
	if err != nil {
		return commitment, mac, nil, fmt.Errorf("deriving key commitment: %w", err)
	}
	copy(commitment[:], c)
	macKey, err := hkdf.Expand(sha256.New, prk, infoMAC, 32)
	if err != nil {
		return commitment, mac, nil, fmt.Errorf("deriving header MAC key: %w", err)
	}
	defer clear(macKey)
	payloadKey, err := hkdf.Expand(sha256.New, prk, infoPayload, 32)
	if err != nil {
		return commitment, mac, nil, fmt.Errorf("deriving payload key: %w", err)
	}
	defer clear(payloadKey)

	if writing {
		copy(hdr[offCommitment:offMAC], commitment[:])
	}
	m := hmac.New(sha256.New, macKey)
	m.Write(hdr[:offMAC])
	m.Sum(mac[:0])

	block, err := aes.NewCipher(payloadKey)
	if err != nil {
		return commitment, mac, nil, fmt.Errorf("creating payload cipher: %w", err)
	}
	aead, err = cipher.NewGCM(block)
	if err != nil {
		return commitment, mac, nil, fmt.Errorf("creating payload cipher: %w", err)
	}
	return commitment, mac, aead, nil
}

// validParams checks p and returns the chunk size exponent to use.
func validParams(key *[32]byte, p Params) (uint8, error) {
	if key == nil {
		return 0, errors.New("container: nil key")
	}
	if !p.Kind.valid() {
		return 0, fmt.Errorf("container: invalid kind %d", uint8(p.Kind))
	}
	l := p.ChunkLog2
	if l == 0 {
		l = DefaultChunkLog2
	}
	if l < minChunkLog2 || l > maxChunkLog2 {
		return 0, fmt.Errorf("container: chunk size exponent %d out of range %d..%d", l, minChunkLog2, maxChunkLog2)
	}
	if p.Concurrency < 0 {
		return 0, fmt.Errorf("container: negative concurrency %d", p.Concurrency)
	}
	return l, nil
}

func workers(concurrency int) int {
	if concurrency <= 0 {
		return runtime.GOMAXPROCS(0)
	}
	return concurrency
}

// newHeader makes the header of a new container with a fresh random salt.
func newHeader(key *[32]byte, p Params) (*[HeaderSize]byte, *stream, error) {
	l, err := validParams(key, p)
	if err != nil {
		return nil, nil, err
	}
	hdr := new([HeaderSize]byte)
	copy(hdr[offMagic:], magic)
	hdr[offVersion] = formatVersion
	hdr[offSuite] = suiteAESGCM
	hdr[offChunkLog2] = l
	if p.Compress {
		hdr[offCompress] = compressZstd
	}
	hdr[offKind] = byte(p.Kind)
	// crypto/rand.Read never fails (it crashes the program instead).
	rand.Read(hdr[offSalt : offSalt+saltSize])
	copy(hdr[offRef:], p.Ref[:])
	_, mac, aead, err := keys(key, hdr[:], true)
	if err != nil {
		return nil, nil, err
	}
	copy(hdr[offMAC:], mac[:])
	check := sha256.Sum256(hdr[:offCheck])
	copy(hdr[offCheck:], check[:checkSize])
	return hdr, &stream{
		aead:      aead,
		aad:       sha256.Sum256(hdr[:]),
		chunkLog2: l,
		chunkSize: 1 << l,
		compress:  p.Compress,
	}, nil
}

// openHeader checks a container header in the order of FORMAT 2.2 and
// returns what is needed to open its chunks.
func openHeader(key *[32]byte, kind Kind, ref [32]byte, hdr []byte) (*stream, error) {
	if key == nil {
		return nil, errors.New("container: nil key")
	}
	if len(hdr) < HeaderSize {
		return nil, integrityError("truncated header: %d bytes, want %d", len(hdr), HeaderSize)
	}
	hdr = hdr[:HeaderSize]

	// 1. Structure and check, before any key is used.
	if string(hdr[offMagic:offMagic+len(magic)]) != magic {
		return nil, integrityError("not a Coffer object (bad magic)")
	}
	check := sha256.Sum256(hdr[:offCheck])
	if subtle.ConstantTimeCompare(check[:checkSize], hdr[offCheck:]) != 1 {
		return nil, integrityError("header checksum mismatch")
	}
	if v := hdr[offVersion]; v != formatVersion {
		if v > formatVersion {
			return nil, fmt.Errorf("%w: object has format version %d and was written by a newer Coffer; this one reads version %d: upgrade Coffer", ErrUnsupportedVersion, v, formatVersion)
		}
		return nil, integrityError("bad format version %d", v)
	}
	if s := hdr[offSuite]; s != suiteAESGCM {
		return nil, integrityError("unknown cipher suite %d", s)
	}
	l := hdr[offChunkLog2]
	if l < minChunkLog2 || l > maxChunkLog2 {
		return nil, integrityError("chunk size exponent %d out of range %d..%d", l, minChunkLog2, maxChunkLog2)
	}
	c := hdr[offCompress]
	if c != compressNone && c != compressZstd {
		return nil, integrityError("unknown compression %d", c)
	}
	k := Kind(hdr[offKind])
	if !k.valid() {
		return nil, integrityError("unknown object kind %d", uint8(k))
	}
	if r := hdr[offReserved]; r != 0 {
		return nil, integrityError("reserved header byte is %d, want 0", r)
	}

	// 2. Key commitment, 3. header MAC.
	commitment, mac, aead, err := keys(key, hdr, false)
	if err != nil {
		return nil, err
	}
	if !hmac.Equal(commitment[:], hdr[offCommitment:offMAC]) {
		return nil, fmt.Errorf("%w: the key does not open this object", ErrWrongKey)
	}
	if !hmac.Equal(mac[:], hdr[offMAC:offCheck]) {
		return nil, integrityError("header authentication failed")
	}

	// 4. What the caller expects.
	if k != kind {
		return nil, integrityError("object is a %s, expected %s", k, kind)
	}
	if subtle.ConstantTimeCompare(ref[:], hdr[offRef:offCommitment]) != 1 {
		return nil, integrityError("object belongs to another name or repository")
	}
	return &stream{
		aead:      aead,
		aad:       sha256.Sum256(hdr),
		chunkLog2: l,
		chunkSize: 1 << l,
		compress:  c == compressZstd,
	}, nil
}
