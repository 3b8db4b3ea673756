//go:build cgo

package pkcs11

import (
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	p11 "github.com/miekg/pkcs11"

	"github.com/cofferhq/coffer/internal/server/sealing"
)

// Available reports whether this build can talk to PKCS#11 modules (it
// needs cgo).
const Available = true

// module is one loaded PKCS#11 library, shared by the Tokens that use it:
// C_Initialize and C_Finalize are per process, not per token.
type module struct {
	ctx  *p11.Ctx
	refs int
}

var (
	modulesMu sync.Mutex
	modules   = map[string]*module{}
)

func loadModule(path string) (*module, error) {
	modulesMu.Lock()
	defer modulesMu.Unlock()
	if m := modules[path]; m != nil {
		m.refs++
		return m, nil
	}
	ctx := p11.New(path)
	if ctx == nil {
		return nil, fmt.Errorf("pkcs11: cannot load module %s (missing, or not a PKCS#11 library)", path)
	}
	if err := ctx.Initialize(); err != nil && !errors.Is(err, p11.Error(p11.CKR_CRYPTOKI_ALREADY_INITIALIZED)) {
		ctx.Destroy()
		return nil, fmt.Errorf("pkcs11: initialize module %s: %w", path, err)
	}
	m := &module{ctx: ctx, refs: 1}
	modules[path] = m
	return m, nil
}

func releaseModule(path string) {
	modulesMu.Lock()
	defer modulesMu.Unlock()
	m := modules[path]
	if m == nil {
		return
	}
	if m.refs--; m.refs == 0 {
		m.ctx.Finalize()
		m.ctx.Destroy()
		delete(modules, path)
	}
}

// Token is an open, logged-in session pool on one token, with the sealing
// key named by Config.KeyLabel (once it exists).
type Token struct {
	cfg      Config
	mod      *module
	slot     uint
	login    p11.SessionHandle // kept open so the login lasts
	sessions chan p11.SessionHandle
	key      p11.ObjectHandle
	hasKey   bool
	markMu   sync.Mutex
	closeMu  sync.Mutex
	closed   bool
}

// Open opens the token and finds the sealing key labelled cfg.KeyLabel.
func Open(cfg Config) (*Token, error) {
	t, err := open(cfg)
	if err != nil {
		return nil, err
	}
	if err := t.findKey(); err != nil {
		t.Close()
		return nil, err
	}
	return t, nil
}

// GenerateKey opens the token, generates a non-extractable AES-256 key
// labelled cfg.KeyLabel inside it, and returns the open token. It refuses if
// a key with that label exists.
func GenerateKey(cfg Config) (*Token, error) {
	t, err := open(cfg)
	if err != nil {
		return nil, err
	}
	if err := t.generateKey(); err != nil {
		t.Close()
		return nil, err
	}
	return t, nil
}

func open(cfg Config) (_ *Token, err error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	if cfg.Sessions <= 0 {
		cfg.Sessions = DefaultSessions
	}
	mod, err := loadModule(cfg.Module)
	if err != nil {
		return nil, err
	}
	t := &Token{cfg: cfg, mod: mod}
	var opened []p11.SessionHandle
	defer func() {
		if err != nil {
			for _, s := range opened {
				mod.ctx.CloseSession(s)
			}
			releaseModule(cfg.Module)
		}
	}()
	if t.slot, err = findSlot(mod.ctx, cfg.TokenLabel); err != nil {
		return nil, err
	}
	newSession := func() (p11.SessionHandle, error) {
		s, err := mod.ctx.OpenSession(t.slot, p11.CKF_SERIAL_SESSION|p11.CKF_RW_SESSION)
		if err != nil {
			return 0, fmt.Errorf("pkcs11: open a session on token %q: %w", cfg.TokenLabel, err)
		}
		opened = append(opened, s)
		return s, nil
	}
	if t.login, err = newSession(); err != nil {
		return nil, err
	}
	if err := mod.ctx.Login(t.login, p11.CKU_USER, cfg.PIN); err != nil && !errors.Is(err, p11.Error(p11.CKR_USER_ALREADY_LOGGED_IN)) {
		if errors.Is(err, p11.Error(p11.CKR_PIN_INCORRECT)) {
			return nil, fmt.Errorf("pkcs11: log in to token %q: wrong PIN (%w)", cfg.TokenLabel, err)
		}
		return nil, fmt.Errorf("pkcs11: log in to token %q: %w", cfg.TokenLabel, err)
	}
	t.sessions = make(chan p11.SessionHandle, cfg.Sessions)
	for range cfg.Sessions {
		s, err := newSession()
		if err != nil {
			return nil, err
		}
		t.sessions <- s
	}
	return t, nil
}

func findSlot(ctx *p11.Ctx, label string) (uint, error) {
	slots, err := ctx.GetSlotList(true)
	if err != nil {
		return 0, fmt.Errorf("pkcs11: list slots: %w", err)
	}
	var found []uint
	var labels []string
	for _, s := range slots {
		ti, err := ctx.GetTokenInfo(s)
		if err != nil {
			continue
		}
		l := strings.TrimRight(ti.Label, " \x00")
		if ti.Flags&p11.CKF_TOKEN_INITIALIZED != 0 {
			labels = append(labels, l)
		}
		if l == label {
			found = append(found, s)
		}
	}
	switch len(found) {
	case 0:
		return 0, fmt.Errorf("pkcs11: no token labelled %q (tokens present: %q)", label, labels)
	case 1:
		return found[0], nil
	}
	return 0, fmt.Errorf("pkcs11: %d tokens are labelled %q; give each a distinct label", len(found), label)
}

// with runs f on a session from the pool.
func (t *Token) with(f func(s p11.SessionHandle) error) error {
	s, ok := <-t.sessions
	if !ok {
		return ErrClosed
	}
	defer func() { t.sessions <- s }()
	return f(s)
}

func keyTemplate(label string) []*p11.Attribute {
	return []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
		p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_AES),
		p11.NewAttribute(p11.CKA_LABEL, label),
	}
}

func (t *Token) findObjects(s p11.SessionHandle, tmpl []*p11.Attribute) ([]p11.ObjectHandle, error) {
	ctx := t.mod.ctx
	if err := ctx.FindObjectsInit(s, tmpl); err != nil {
		return nil, err
	}
	var all []p11.ObjectHandle
	for {
		objs, _, err := ctx.FindObjects(s, 16)
		if err != nil {
			ctx.FindObjectsFinal(s)
			return nil, err
		}
		if len(objs) == 0 {
			break
		}
		all = append(all, objs...)
	}
	return all, ctx.FindObjectsFinal(s)
}

func (t *Token) findKey() error {
	return t.with(func(s p11.SessionHandle) error {
		objs, err := t.findObjects(s, keyTemplate(t.cfg.KeyLabel))
		if err != nil {
			return fmt.Errorf("pkcs11: find key %q: %w", t.cfg.KeyLabel, err)
		}
		switch len(objs) {
		case 0:
			return fmt.Errorf("pkcs11: token %q has no AES key labelled %q: %w", t.cfg.TokenLabel, t.cfg.KeyLabel, ErrNoKey)
		case 1:
		default:
			return fmt.Errorf("pkcs11: token %q has %d AES keys labelled %q; keep one", t.cfg.TokenLabel, len(objs), t.cfg.KeyLabel)
		}
		attrs, err := t.mod.ctx.GetAttributeValue(s, objs[0], []*p11.Attribute{
			p11.NewAttribute(p11.CKA_EXTRACTABLE, nil),
			p11.NewAttribute(p11.CKA_SENSITIVE, nil),
			p11.NewAttribute(p11.CKA_VALUE_LEN, nil),
		})
		if err != nil {
			return fmt.Errorf("pkcs11: read attributes of key %q: %w", t.cfg.KeyLabel, err)
		}
		for _, a := range attrs {
			switch a.Type {
			case p11.CKA_EXTRACTABLE:
				if len(a.Value) == 1 && a.Value[0] != 0 {
					return fmt.Errorf("pkcs11: key %q is extractable; generate a non-extractable one (GenerateKey)", t.cfg.KeyLabel)
				}
			case p11.CKA_SENSITIVE:
				if len(a.Value) == 1 && a.Value[0] == 0 {
					return fmt.Errorf("pkcs11: key %q is not sensitive; generate one with GenerateKey", t.cfg.KeyLabel)
				}
			case p11.CKA_VALUE_LEN:
				if n, err := bytesToUint(a.Value); err == nil && n != 32 {
					return fmt.Errorf("pkcs11: key %q is AES-%d; AES-256 is required", t.cfg.KeyLabel, n*8)
				}
			}
		}
		t.key, t.hasKey = objs[0], true
		return nil
	})
}

func bytesToUint(b []byte) (uint, error) {
	// CK_ULONG in the platform's byte order (little-endian on every
	// platform Coffer builds for), as miekg/pkcs11 returns it.
	if len(b) == 0 || len(b) > 8 {
		return 0, errors.New("bad CK_ULONG")
	}
	var n uint
	for i := len(b) - 1; i >= 0; i-- {
		n = n<<8 | uint(b[i])
	}
	return n, nil
}

func (t *Token) generateKey() error {
	return t.with(func(s p11.SessionHandle) error {
		objs, err := t.findObjects(s, keyTemplate(t.cfg.KeyLabel))
		if err != nil {
			return fmt.Errorf("pkcs11: find key %q: %w", t.cfg.KeyLabel, err)
		}
		if len(objs) > 0 {
			return fmt.Errorf("pkcs11: token %q already has a key labelled %q: %w", t.cfg.TokenLabel, t.cfg.KeyLabel, ErrKeyExists)
		}
		h, err := t.mod.ctx.GenerateKey(s, []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_KEY_GEN, nil)}, []*p11.Attribute{
			p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
			p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_AES),
			p11.NewAttribute(p11.CKA_VALUE_LEN, 32),
			p11.NewAttribute(p11.CKA_LABEL, t.cfg.KeyLabel),
			p11.NewAttribute(p11.CKA_ID, []byte(t.cfg.KeyLabel)),
			p11.NewAttribute(p11.CKA_TOKEN, true),
			p11.NewAttribute(p11.CKA_PRIVATE, true),
			p11.NewAttribute(p11.CKA_SENSITIVE, true),
			p11.NewAttribute(p11.CKA_EXTRACTABLE, false),
			p11.NewAttribute(p11.CKA_MODIFIABLE, false),
			p11.NewAttribute(p11.CKA_ENCRYPT, true),
			p11.NewAttribute(p11.CKA_DECRYPT, true),
			p11.NewAttribute(p11.CKA_WRAP, false),
			p11.NewAttribute(p11.CKA_UNWRAP, false),
			p11.NewAttribute(p11.CKA_SIGN, false),
			p11.NewAttribute(p11.CKA_VERIFY, false),
			p11.NewAttribute(p11.CKA_DERIVE, false),
		})
		if err != nil {
			return fmt.Errorf("pkcs11: generate AES-256 key %q in token %q: %w", t.cfg.KeyLabel, t.cfg.TokenLabel, err)
		}
		t.key, t.hasKey = h, true
		return nil
	})
}

// Key returns the token's sealing key: AES-256-GCM computed inside the
// token (format version 2, 12-byte random nonces). Each call is a round trip
// to the token; use it to wrap a data key (sealing.CreateWrappedKey /
// LoadWrappedKey), not per stored value (README.md has the numbers).
func (t *Token) Key() sealing.Key { return tokenKey{t} }

type tokenKey struct{ t *Token }

const gcmNonceSize = 12

func (k tokenKey) Name() string {
	return fmt.Sprintf("PKCS#11 key %q in token %q", k.t.cfg.KeyLabel, k.t.cfg.TokenLabel)
}

func (k tokenKey) Seal(aad, plaintext []byte) ([]byte, error) {
	if !k.t.hasKey {
		return nil, ErrNoKey
	}
	nonce := make([]byte, gcmNonceSize)
	rand.Read(nonce)
	var ct []byte
	err := k.t.with(func(s p11.SessionHandle) error {
		params := p11.NewGCMParams(nonce, sealing.VersionedAAD(sealing.VersionTokenGCM, aad), 128)
		defer params.Free()
		if err := k.t.mod.ctx.EncryptInit(s, []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_GCM, params)}, k.t.key); err != nil {
			return fmt.Errorf("C_EncryptInit: %w", err)
		}
		var err error
		if ct, err = k.t.mod.ctx.Encrypt(s, plaintext); err != nil {
			return fmt.Errorf("C_Encrypt: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("pkcs11: seal with %s: %w", k.Name(), err)
	}
	out := make([]byte, 0, 1+gcmNonceSize+len(ct))
	out = append(out, sealing.VersionTokenGCM)
	out = append(out, nonce...)
	return append(out, ct...), nil
}

func (k tokenKey) Open(aad, sealed []byte) ([]byte, error) {
	if !k.t.hasKey {
		return nil, ErrNoKey
	}
	if len(sealed) < 1+gcmNonceSize+16 {
		return nil, fmt.Errorf("%s: %w", k.Name(), sealing.ErrFormat)
	}
	if sealed[0] != sealing.VersionTokenGCM {
		return nil, fmt.Errorf("%s: %w (%d; this key seals version %d)", k.Name(), sealing.ErrUnsupportedVersion, sealed[0], sealing.VersionTokenGCM)
	}
	nonce := slices.Clone(sealed[1 : 1+gcmNonceSize])
	var plain []byte
	var authFailed bool
	err := k.t.with(func(s p11.SessionHandle) error {
		params := p11.NewGCMParams(nonce, sealing.VersionedAAD(sealing.VersionTokenGCM, aad), 128)
		defer params.Free()
		if err := k.t.mod.ctx.DecryptInit(s, []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_GCM, params)}, k.t.key); err != nil {
			return fmt.Errorf("C_DecryptInit: %w", err)
		}
		var err error
		if plain, err = k.t.mod.ctx.Decrypt(s, sealed[1+gcmNonceSize:]); err != nil {
			// Tokens report a bad tag as CKR_ENCRYPTED_DATA_INVALID,
			// CKR_AEAD_DECRYPT_FAILED (PKCS#11 3.0) or, SoftHSM2 2.6,
			// CKR_GENERAL_ERROR. The raw code stays in the message.
			authFailed = errors.Is(err, p11.Error(p11.CKR_ENCRYPTED_DATA_INVALID)) ||
				errors.Is(err, p11.Error(ckrAEADDecryptFailed)) ||
				errors.Is(err, p11.Error(p11.CKR_GENERAL_ERROR))
			return fmt.Errorf("C_Decrypt: %w", err)
		}
		return nil
	})
	if authFailed {
		return nil, fmt.Errorf("%s: %w (%v)", k.Name(), sealing.ErrAuthentication, err)
	}
	if err != nil {
		return nil, fmt.Errorf("pkcs11: open with %s: %w", k.Name(), err)
	}
	return plain, nil
}

// CKR_AEAD_DECRYPT_FAILED (PKCS#11 v3.0) is not in miekg/pkcs11 v1.1.2.
const ckrAEADDecryptFailed = 0x00000035

// Marks are CKO_DATA objects (token, private) with CKA_APPLICATION
// markApplication and CKA_LABEL = the key label, CKA_VALUE = the encoded
// sealing.Mark. A write creates the new object before destroying the old
// ones, so a crash in between leaves two and ReadMark takes the highest.

const markApplication = "coffer vault high-water mark"

func (t *Token) markTemplate() []*p11.Attribute {
	return []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_DATA),
		p11.NewAttribute(p11.CKA_APPLICATION, markApplication),
		p11.NewAttribute(p11.CKA_LABEL, t.cfg.KeyLabel),
	}
}

// readMarks returns the stored mark objects and the highest mark.
func (t *Token) readMarks(s p11.SessionHandle) ([]p11.ObjectHandle, sealing.Mark, error) {
	objs, err := t.findObjects(s, t.markTemplate())
	if err != nil {
		return nil, sealing.Mark{}, fmt.Errorf("pkcs11: find marks: %w", err)
	}
	var best sealing.Mark
	for _, o := range objs {
		attrs, err := t.mod.ctx.GetAttributeValue(s, o, []*p11.Attribute{p11.NewAttribute(p11.CKA_VALUE, nil)})
		if err != nil {
			return nil, sealing.Mark{}, fmt.Errorf("pkcs11: read mark: %w", err)
		}
		var m sealing.Mark
		if err := m.UnmarshalBinary(attrs[0].Value); err != nil {
			return nil, sealing.Mark{}, fmt.Errorf("pkcs11: mark object in token %q: %w", t.cfg.TokenLabel, err)
		}
		if m.Index > best.Index || (m.Index == best.Index && m.Term > best.Term) {
			best = m
		}
	}
	return objs, best, nil
}

// ReadMark returns the high-water mark stored for this key label, the zero
// Mark if none.
func (t *Token) ReadMark() (sealing.Mark, error) {
	var m sealing.Mark
	err := t.with(func(s p11.SessionHandle) error {
		var err error
		_, m, err = t.readMarks(s)
		return err
	})
	return m, err
}

// WriteMark stores m unless it goes back from the stored mark
// (sealing.ErrRollback, sealing.ErrMarkConflict). Writes from one process
// are serialized; only one process may use a key label's marks.
func (t *Token) WriteMark(m sealing.Mark) error {
	t.markMu.Lock()
	defer t.markMu.Unlock()
	return t.with(func(s p11.SessionHandle) error {
		old, cur, err := t.readMarks(s)
		if err != nil {
			return err
		}
		if err := cur.CheckAdvance(m); err != nil {
			return err
		}
		if m == cur && len(old) == 1 {
			return nil
		}
		v, _ := m.MarshalBinary()
		tmpl := append(t.markTemplate(),
			p11.NewAttribute(p11.CKA_TOKEN, true),
			p11.NewAttribute(p11.CKA_PRIVATE, true),
			p11.NewAttribute(p11.CKA_MODIFIABLE, false),
			p11.NewAttribute(p11.CKA_VALUE, v),
		)
		if _, err := t.mod.ctx.CreateObject(s, tmpl); err != nil {
			return fmt.Errorf("pkcs11: store mark in token %q: %w", t.cfg.TokenLabel, err)
		}
		for _, o := range old {
			if err := t.mod.ctx.DestroyObject(s, o); err != nil {
				return fmt.Errorf("pkcs11: remove the previous mark: %w", err)
			}
		}
		return nil
	})
}

// Close closes the token's sessions (the login ends with the last one) and
// releases the module.
func (t *Token) Close() error {
	t.closeMu.Lock()
	defer t.closeMu.Unlock()
	if t.closed {
		return nil
	}
	t.closed = true
	for range t.cfg.Sessions {
		s := <-t.sessions // waits for operations in flight
		t.mod.ctx.CloseSession(s)
	}
	close(t.sessions)
	t.mod.ctx.CloseSession(t.login)
	releaseModule(t.cfg.Module)
	return nil
}
