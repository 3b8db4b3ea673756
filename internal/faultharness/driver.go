package faultharness

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cofferhq/coffer/internal/device/backupkey"
	"github.com/cofferhq/coffer/internal/device/recovery"
	"github.com/cofferhq/coffer/internal/protocol/bundle"
)

// Driver runs package recovery's operations against the fleet and records
// each one in a History.
type Driver struct {
	H        *History
	relayURL string
	bundle   *bundle.Bundle
	tokenFor func(account string) (relay, vault string, err error)
	httpc    *http.Client

	mu       sync.Mutex
	clients  map[string]*recovery.Client
	sessions map[int]*recovery.Session // by the id of the Recover that made them

	keys    keyRing
	nextPw  atomic.Int64
	nextBad atomic.Int64
}

// NewDriver returns a driver for the fleet reached through relayURL.
// timeout bounds each client operation (the relay gives up after 10 s).
func NewDriver(h *History, relayURL string, bundle *bundle.Bundle, tokenFor func(string) (string, string, error), timeout time.Duration) *Driver {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 64
	return &Driver{
		H: h, relayURL: relayURL, bundle: bundle, tokenFor: tokenFor,
		httpc:    &http.Client{Timeout: timeout, Transport: tracingTransport{tr}},
		clients:  map[string]*recovery.Client{},
		sessions: map[int]*recovery.Session{},
		keys:     keyRing{ids: map[[backupkey.Size]byte]int{}},
	}
}

// NewPassword returns a fresh password id (positive).
func (d *Driver) NewPassword() int { return int(d.nextPw.Add(1)) }

// WrongPassword returns a fresh password id that is never registered.
func (d *Driver) WrongPassword() int { return -int(d.nextBad.Add(1)) }

// NewKey makes a fresh backup key and returns its id.
func (d *Driver) NewKey() int { return d.keys.add(backupkey.New()) }

func password(id int) []byte { return fmt.Appendf(nil, "password number %d", id) }

func (d *Driver) client(account string) (*recovery.Client, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if c := d.clients[account]; c != nil {
		return c, nil
	}
	tok, vtok, err := d.tokenFor(account)
	if err != nil {
		return nil, err
	}
	c, err := recovery.New(recovery.Settings{
		Relay: d.relayURL, Account: account, Token: tok, VaultToken: vtok, Bundle: d.bundle,
		InsecureDevKSF: true, HTTPClient: d.httpc,
	})
	if err != nil {
		return nil, err
	}
	d.clients[account] = c
	return c, nil
}

// keyRing numbers the backup keys the harness made.
type keyRing struct {
	mu   sync.Mutex
	keys []*backupkey.Key
	ids  map[[backupkey.Size]byte]int
}

func (k *keyRing) add(key *backupkey.Key) int {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.keys = append(k.keys, key)
	id := len(k.keys)
	k.ids[*key.Bytes()] = id
	return id
}

func (k *keyRing) get(id int) *backupkey.Key {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.keys[id-1]
}

// lookup returns the id of key, or -1 if the harness never made it.
func (k *keyRing) lookup(key *backupkey.Key) int {
	k.mu.Lock()
	defer k.mu.Unlock()
	if id, ok := k.ids[*key.Bytes()]; ok {
		return id
	}
	return -1
}

// Requests are counted per operation by the HTTP transport, so a Recover
// is known to have received its KE2 when it sent a second request (the
// finish, or the abort of a wrong password).
type traceKey struct{}

type opTrace struct{ n atomic.Int32 }

type tracingTransport struct{ base http.RoundTripper }

func (t tracingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if tr, ok := r.Context().Value(traceKey{}).(*opTrace); ok {
		tr.n.Add(1)
	}
	return t.base.RoundTrip(r)
}

// run records op around f.
func (d *Driver) run(ctx context.Context, op *Op, f func(ctx context.Context, c *recovery.Client) error) *Op {
	c, err := d.client(op.Account)
	if err != nil {
		panic(err) // a bad account name or token key: a harness bug
	}
	tr := &opTrace{}
	ctx = context.WithValue(ctx, traceKey{}, tr)
	d.H.Begin(op)
	err = f(ctx, c)
	op.Requests = int(tr.n.Load())
	op.KE2 = op.Kind == OpRecover && op.Requests >= 2
	classify(op, err)
	d.H.End(op)
	return op
}

// Enroll stores key under pw, with auth (Session: the ticket of the
// successful Recover whose op id is authSession).
func (d *Driver) Enroll(ctx context.Context, client int, account string, pw, key int, auth AuthKind, authID int) *Op {
	op := &Op{Client: client, Account: account, Kind: OpEnroll, Pw: pw, Key: key, Auth: auth}
	a := d.authorization(op, auth, authID)
	return d.run(ctx, op, func(ctx context.Context, c *recovery.Client) error {
		e, err := c.Enroll(ctx, password(pw), d.keys.get(key), a)
		if err == nil {
			op.Epoch, op.Limit = e.Epoch, e.GuessLimit
		}
		return err
	})
}

// ChangePassword replaces the record with one under pw for the same key,
// proving the key (recovery.Client.ChangePassword: an Enroll with key
// authorization, recorded as such).
func (d *Driver) ChangePassword(ctx context.Context, client int, account string, pw, key int) *Op {
	op := &Op{Client: client, Account: account, Kind: OpEnroll, Pw: pw, Key: key, Auth: AuthKey, AuthKey: key}
	return d.run(ctx, op, func(ctx context.Context, c *recovery.Client) error {
		e, err := c.ChangePassword(ctx, d.keys.get(key), password(pw))
		if err == nil {
			op.Epoch, op.Limit = e.Epoch, e.GuessLimit
		}
		return err
	})
}

func (d *Driver) authorization(op *Op, auth AuthKind, id int) recovery.Authorization {
	switch auth {
	case AuthKey:
		op.AuthKey = id
		return recovery.Authorization{Key: d.keys.get(id)}
	case AuthSession:
		op.AuthSession = id
		d.mu.Lock()
		defer d.mu.Unlock()
		return recovery.Authorization{Session: d.sessions[id]}
	}
	return recovery.Authorization{}
}

// Recover logs in with pw.
func (d *Driver) Recover(ctx context.Context, client int, account string, pw int) *Op {
	op := &Op{Client: client, Account: account, Kind: OpRecover, Pw: pw}
	return d.run(ctx, op, func(ctx context.Context, c *recovery.Client) error {
		key, s, err := c.Recover(ctx, password(pw))
		if err == nil {
			op.GotKey = d.keys.lookup(key)
			op.Failed, op.Epoch = s.FailedGuesses, s.Epoch
			d.mu.Lock()
			d.sessions[op.ID] = s
			d.mu.Unlock()
		}
		return err
	})
}

// Disable erases the record.
func (d *Driver) Disable(ctx context.Context, client int, account string, auth AuthKind, authID int) *Op {
	op := &Op{Client: client, Account: account, Kind: OpDisable, Auth: auth}
	a := d.authorization(op, auth, authID)
	return d.run(ctx, op, func(ctx context.Context, c *recovery.Client) error {
		return c.Disable(ctx, a)
	})
}

// Status asks for the account's state.
func (d *Driver) Status(ctx context.Context, client int, account string) *Op {
	op := &Op{Client: client, Account: account, Kind: OpStatus}
	return d.run(ctx, op, func(ctx context.Context, c *recovery.Client) error {
		s, err := c.Status(ctx)
		if err == nil {
			op.Status = &StatusOut{Registered: s.Registered, Disabled: s.Disabled, Destroyed: s.Destroyed,
				GuessesUsed: s.GuessesUsed, GuessLimit: s.GuessLimit, Epoch: s.Epoch}
		}
		return err
	})
}

// classify sets op's result from the error its call returned.
func classify(op *Op, err error) {
	if err == nil {
		op.Result = ResOK
		if op.Kind == OpRecover && op.GotKey < 0 {
			op.Anomaly, op.Err = true, "Recover returned a key the harness never enrolled"
		}
		return
	}
	op.Err = err.Error()
	op.Unavailable = errors.Is(err, recovery.ErrUnavailable)
	var wrong *recovery.WrongPasswordError
	switch {
	case errors.As(err, &wrong) && op.Kind == OpRecover:
		op.Result, op.Left = ResWrong, wrong.GuessesLeft
		if !op.KE2 {
			// A wrong password is learnt from the KE2 only.
			op.Anomaly = true
		}
	case errors.Is(err, recovery.ErrDestroyed):
		switch {
		case op.Kind == OpRecover && errors.Is(err, recovery.ErrLastGuess):
			op.Result = ResWrongDestroyed
		case op.Kind == OpRecover && op.KE2:
			op.Result = ResKE2Refused
		default:
			op.Result = ResDestroyed
		}
	case errors.Is(err, recovery.ErrUnauthorized) && op.Kind != OpRecover:
		op.Result = ResUnauthorized
	case errors.Is(err, recovery.ErrNotRegistered) && (op.Kind == OpDisable || op.Kind == OpRecover):
		op.Result = ResNotRegistered
		if op.KE2 {
			// The vault answers an account without a record before any
			// KE2 (there are no fake logins).
			op.Anomaly = true
		}
	case errors.Is(err, recovery.ErrUnavailable):
		switch {
		case op.Kind == OpRecover && op.KE2 && errors.Is(err, recovery.ErrLoginExpired):
			op.Result = ResKE2Refused
		case op.Kind == OpRecover && op.KE2:
			op.Result = ResKE2Unknown
		default:
			op.Result = ResUnknown
		}
	case op.Kind == OpEnroll && errors.Is(err, recovery.ErrRegistrationSuperseded):
		op.Result = ResStale
	default:
		// Integrity failures, refused tokens, clock errors, anything else:
		// no fault the harness injects explains them.
		op.Anomaly = true
		op.Result = ResUnknown
		if op.Kind == OpRecover && op.KE2 {
			op.Result = ResKE2Unknown
		}
	}
}
