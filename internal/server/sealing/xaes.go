package sealing

import (
	"crypto/aes"
	"crypto/cipher"
	"errors"
)

// xaes is XAES-256-GCM (https://c2sp.org/XAES-256-GCM): AES-256-GCM with a
// 192-bit nonce. The first 96 bits of the nonce and the key derive a fresh
// AES-256 key (NIST SP 800-108r1 counter KDF with CMAC-AES-256), the last 96
// bits are the GCM nonce. Random 192-bit nonces can be used for about 2^80
// messages under one key, where plain AES-GCM's random 96-bit nonces stop at
// 2^32 (NIST SP 800-38D): a busy replica seals a raft log entry per command
// and would reach 2^32 within days.
type xaes struct {
	block cipher.Block
	k1    [aes.BlockSize]byte // CMAC subkey K1
}

const (
	xaesNonceSize = 24
	xaesOverhead  = 16
)

func newXAES(key []byte) (*xaes, error) {
	if len(key) != 32 {
		return nil, errors.New("sealing: XAES-256-GCM needs a 32-byte key")
	}
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	x := &xaes{block: b}
	// K1 = L << 1, xor 0x87 into the last byte if L's top bit was set,
	// where L = AES-256_K(0^128).
	var l [aes.BlockSize]byte
	b.Encrypt(l[:], l[:])
	msb := l[0] >> 7
	for i := range len(l) - 1 {
		x.k1[i] = l[i]<<1 | l[i+1]>>7
	}
	x.k1[len(l)-1] = l[len(l)-1]<<1 ^ 0x87*msb
	return x, nil
}

// aead returns AES-256-GCM under the key derived for nonce[:12].
func (x *xaes) aead(nonce []byte) cipher.AEAD {
	var m, k [32]byte
	// M_i = 0x00 || i || 'X' || 0x00 || N[:12], xored with K1 (CMAC of
	// one complete block).
	m[1], m[2] = 0x01, 'X'
	copy(m[4:16], nonce[:12])
	m[17], m[18] = 0x02, 'X'
	copy(m[20:32], nonce[:12])
	for i := range aes.BlockSize {
		m[i] ^= x.k1[i]
		m[16+i] ^= x.k1[i]
	}
	x.block.Encrypt(k[:16], m[:16])
	x.block.Encrypt(k[16:], m[16:])
	b, err := aes.NewCipher(k[:])
	clear(k[:])
	if err != nil {
		panic(err) // 32-byte key: cannot fail
	}
	g, err := cipher.NewGCM(b)
	if err != nil {
		panic(err)
	}
	return g
}

func (x *xaes) seal(dst, nonce, plaintext, aad []byte) []byte {
	return x.aead(nonce).Seal(dst, nonce[12:], plaintext, aad)
}

func (x *xaes) open(dst, nonce, ciphertext, aad []byte) ([]byte, error) {
	return x.aead(nonce).Open(dst, nonce[12:], ciphertext, aad)
}
