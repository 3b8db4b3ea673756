// Package vault is the Backup Key Vault server (PROTOCOL.md): it opens
// sealed requests, runs the server half of OPAQUE, and turns every request
// into one command of the replicated state machine, answering only after
// that command is committed by a majority of replicas. The guess budget
// lives in vault/state; vault/replica replicates it with Raft.
package vault

import (
	"context"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/cofferhq/coffer/internal/protocol/channel"
	"github.com/cofferhq/coffer/internal/protocol/pake"
	"github.com/cofferhq/coffer/internal/protocol/vaultv1"
	"github.com/cofferhq/coffer/internal/protocol/vaultv1/vaultv1connect"
	"github.com/cofferhq/coffer/internal/protocol/wire"
	"github.com/cofferhq/coffer/internal/server/replica"
	"github.com/cofferhq/coffer/internal/server/vaultstate"
	"github.com/cofferhq/coffer/token"
)

// Freshness is how far a request's time may be from the vault's clock.
const Freshness = 120 * time.Second

// maxWrappedKey bounds the wrapped key a client may store.
const maxWrappedKey = 256

// Config configures a Server.
type Config struct {
	Secrets *Secrets
	Replica *replica.Replica
	// Tokens verifies the vault token inside every sealed request: the
	// app backend's key, issuer and the vault's audience (PROTOCOL.md §3).
	// Required: the vault believes no relay about whose request it is.
	Tokens *token.Verifier
	// URLs maps replicas' Raft ids to the base URLs of their
	// VaultService, as this replica's configuration knows them: its own
	// (published to the replicated member directory, members.go) and its
	// peers' (which fill what the directory lacks). Reads prefer the
	// directory and fall back to these.
	URLs map[string]string
	// DataCentre labels this replica (status, metrics; published like its
	// URL); DataCentres maps the other replicas' ids to theirs, where
	// known (as URLs' peers).
	DataCentre  string
	DataCentres map[string]string
	// MemberSyncInterval is how often the member directory is kept up
	// (members.go): the leader records its own entry and fills gaps from
	// the configuration, a follower asks the leader to record its own
	// entry when it differs. Default DefaultMemberSyncInterval; negative:
	// never (joins and removals still record and forget entries).
	MemberSyncInterval time.Duration
	// AdminRequiresCert: the admin endpoint (/admin/, admin.go) serves only
	// callers with a verified fleet-CA client certificate (the port serves
	// TLS). Without it, only loopback callers.
	AdminRequiresCert bool
	// GuessLimit for new registrations (default DefaultGuessLimit).
	GuessLimit uint32
	// Pacing spaces out wrong guesses (nil: DefaultPacing; a zero Pacing:
	// none, for tests and load generators).
	Pacing *vaultstate.Pacing
	// AllowWeakKSF accepts registrations with profiles below PROTOCOL.md's
	// floor: development fleets and load tests only.
	AllowWeakKSF bool
	// Forward, if set, makes a follower hand the requests it gets to the
	// leader through this client (mutual TLS with the replica's certificate
	// in a fleet with TLS), so any replica can take any request; the answer
	// names the leader (Coffer-Leader) for the relay's next request. Nil: a
	// follower answers Unavailable with the leader's URL, and the relay
	// retries there. A follower also uses it to ask the leader to record
	// its own URL and data centre in the member directory (members.go).
	Forward *http.Client
	// TickInterval is how often the leader commits a Tick, carrying its
	// clock into the state machine, which lets one command move that clock
	// at most vaultstate.MaxClockStep (default DefaultTickInterval;
	// negative: never).
	TickInterval time.Duration
	// Shares, if set, are this replica's OPRF shares (PROTOCOL.md §7,
	// LoadShareFile): registrations and logins of records with public
	// shares go through the threshold OPRF, partial evaluations travel
	// between replicas on EvaluatePath through Forward (or a plain client
	// on a fleet without TLS). Without them every OPRF evaluation uses
	// the fleet's OPRF seed (version 1).
	//
	// Around a membership change a replica holds two generations (the
	// current one and the next); registrations use the newest, logins
	// their record's, and a reshare (reshare.go) moves the records.
	Shares []*ShareSet
	// ApplyTimeout bounds one command's commit (default 5 s).
	ApplyTimeout time.Duration
	Now          func() time.Time
	Logger       *slog.Logger
}

// Server serves VaultService.
type Server struct {
	cfg       Config
	tokens    *token.Cache // cfg.Tokens, remembering accepted tokens until they expire
	recipient *channel.Recipient
	opaque    *pake.Server
	log       *slog.Logger
	metrics   *Metrics
	members   *members
	fwd       *forwarder
	th        *threshold // nil without OPRF shares

	selfURLWarn sync.Once
	warnMu      sync.Mutex
	lastWarn    time.Time
}

// DefaultPacing is the fleet's schedule of waits between wrong guesses when
// its configuration names none: three guesses in a row, then 5 minutes
// before the fourth, doubling up to 8 hours — about 10½ hours to spend a
// budget of 10, where without pacing a token holder spends it in a second.
var DefaultPacing = vaultstate.Pacing{Free: 3, Base: 300, Max: 8 * 3600}

// DefaultGuessLimit is the guess budget of a new registration when the
// fleet's configuration names none: the one place the default lives. The
// vault server puts the limit into every Register command it proposes; the
// state machine refuses a command without one.
const DefaultGuessLimit = 10

// New returns a Server.
func New(cfg Config) (*Server, error) {
	if cfg.Secrets == nil || cfg.Replica == nil {
		return nil, errors.New("vault: secrets and replica are required")
	}
	if cfg.Tokens == nil || len(cfg.Tokens.Key) == 0 || cfg.Tokens.Issuer == "" || cfg.Tokens.Audience == "" {
		return nil, errors.New("vault: a token verifier (the app backend's public key, issuer and the vault's audience) is required: the vault checks every request's vault token itself")
	}
	if cfg.GuessLimit == 0 {
		cfg.GuessLimit = DefaultGuessLimit
	}
	if cfg.GuessLimit > vaultstate.MaxGuessLimit {
		return nil, fmt.Errorf("vault: the guess limit %d exceeds %d; configure at most %d", cfg.GuessLimit, vaultstate.MaxGuessLimit, vaultstate.MaxGuessLimit)
	}
	if cfg.Pacing == nil {
		p := DefaultPacing
		cfg.Pacing = &p
	}
	if cfg.ApplyTimeout == 0 {
		cfg.ApplyTimeout = 5 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	op, err := pake.NewServer(cfg.Secrets.OPAQUE)
	if err != nil {
		return nil, err
	}
	if cfg.MemberSyncInterval == 0 {
		cfg.MemberSyncInterval = DefaultMemberSyncInterval
	}
	if cfg.TickInterval == 0 {
		cfg.TickInterval = DefaultTickInterval
	}
	mem := newMembers(cfg.Replica, &cfg, cfg.Replica.ID())
	var fwd *forwarder
	if cfg.Forward != nil {
		fwd = &forwarder{hc: cfg.Forward, clients: map[string]vaultv1connect.VaultServiceClient{}}
	}
	s := &Server{
		tokens:    token.NewCache(cfg.Tokens, token.DefaultCacheSize),
		fwd:       fwd,
		members:   mem,
		cfg:       cfg,
		recipient: channel.NewRecipient(cfg.Secrets.HPKE, cfg.Secrets.FleetID),
		opaque:    op,
		log:       cfg.Logger,
		metrics:   newMetrics(cfg.DataCentre),
	}
	if len(cfg.Shares) > 0 {
		hc := cfg.Forward
		if hc == nil {
			hc = &http.Client{Timeout: evalWait + time.Second}
		}
		th, err := newThreshold(s, cfg.Shares, hc)
		if err != nil {
			return nil, fmt.Errorf("vault: OPRF shares: %w", err)
		}
		s.th = th
	} else if len(cfg.Secrets.OPAQUE.OPRFSeed) == 0 {
		return nil, errors.New("vault: the fleet secrets hold no OPRF seed (a threshold fleet) and this replica has no OPRF share file: configure oprf_share_file")
	}
	if cfg.MemberSyncInterval > 0 {
		// Ends when the replica closes.
		go s.keepMembers(cfg.MemberSyncInterval)
	}
	if cfg.TickInterval > 0 {
		go s.keepClock(cfg.TickInterval)
	}
	return s, nil
}

// DefaultTickInterval is Config.TickInterval's default: well within
// vaultstate.MaxClockStep, so an idle fleet's clock never lags.
const DefaultTickInterval = 30 * time.Second

// keepClock commits a Tick every interval while this replica leads, until
// the replica closes.
func (s *Server) keepClock(interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-s.cfg.Replica.Done():
			return
		case <-t.C:
		}
		if !s.cfg.Replica.IsLeader() {
			continue
		}
		cmd := vaultstate.Command{Time: s.cfg.Now().UnixMilli(), Op: &vaultstate.Tick{}}
		rand.Read(cmd.RequestID[:])
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ApplyTimeout)
		if _, err := s.cfg.Replica.Apply(ctx, cmd); err != nil {
			s.log.Debug("tick not committed", "error", err)
		}
		cancel()
	}
}

// Metrics returns the server's metrics.
func (s *Server) Metrics() *Metrics { return s.metrics }

// Handler serves VaultService, /healthz (the process is up), /readyz
// (the replica knows a leader, so requests can be served), /metrics and the
// admin endpoint /admin/ (admin.go).
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	path, h := vaultv1connect.NewVaultServiceHandler(s, connect.WithReadMaxBytes(64<<10))
	mux.Handle(path, h)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if id, _ := s.cfg.Replica.Leader(); id == "" {
			http.Error(w, "no leader", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	mux.Handle("GET /metrics", s.metrics.Handler(s.cfg.Replica))
	if s.th != nil {
		mux.HandleFunc("POST "+EvaluatePath, s.th.handleEvaluate)
	}
	s.adminHandler(mux)
	return mux
}

// recordID is the keyed hash of the account id that keys its state.
func (s *Server) recordID(account string) vaultstate.RecordID {
	m := hmac.New(sha256.New, s.cfg.Secrets.RecordIDKey[:])
	m.Write([]byte(account))
	var id vaultstate.RecordID
	m.Sum(id[:0])
	return id
}

// notLeader returns the error that sends the relay to the leader.
func (s *Server) notLeader() error {
	id, _ := s.cfg.Replica.Leader()
	if u := s.members.url(id); u != "" {
		return wire.NotLeaderError(u)
	}
	return connect.NewError(connect.CodeUnavailable, errors.New("this vault replica is not the leader and knows no leader yet; retry"))
}

// Exchange implements VaultService.
func (s *Server) Exchange(ctx context.Context, in *vaultv1.VaultExchangeRequest) (*vaultv1.ExchangeResponse, error) {
	start := time.Now()
	if !s.cfg.Replica.IsLeader() {
		return s.notLeaderAnswer(ctx, in)
	}
	plain, responder, err := s.recipient.Open(in.GetSealed(), in.GetAccount())
	if err != nil {
		s.metrics.requests.WithLabelValues("unknown", "bad_seal").Inc()
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("the sealed request does not open for this fleet and account"))
	}
	req := new(vaultv1.Request)
	if err := proto.Unmarshal(plain, req); err != nil || len(req.GetRequestId()) != vaultstate.RequestIDSize {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("malformed request"))
	}
	resp, op := s.handle(ctx, in.GetAccount(), req)
	resp.RequestId = req.GetRequestId()
	wire.PadResponse(resp)
	if resp.GetError() != nil && resp.GetError().GetCode() == vaultv1.Code_CODE_UNAVAILABLE && !s.cfg.Replica.IsLeader() {
		// Leadership moved while we worked: let the relay retry there.
		return nil, s.notLeader()
	}
	out, err := proto.Marshal(resp)
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	sealed, err := responder.Seal(out, req.GetRequestId())
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	outcome := "ok"
	if e := resp.GetError(); e != nil {
		outcome = e.GetCode().String()
	}
	s.metrics.requests.WithLabelValues(op, outcome).Inc()
	s.metrics.latency.WithLabelValues(op).Observe(time.Since(start).Seconds())
	s.log.Debug("vault request", "op", op, "outcome", outcome, "ms", time.Since(start).Milliseconds())
	return &vaultv1.ExchangeResponse{Sealed: sealed}, nil
}

func fail(code vaultv1.Code, msg string) *vaultv1.Response {
	return &vaultv1.Response{Error: &vaultv1.Error{Code: code, Message: msg}}
}

// handle runs one opened request.
func (s *Server) handle(ctx context.Context, account string, req *vaultv1.Request) (*vaultv1.Response, string) {
	if req.GetAccount() != account {
		return fail(vaultv1.Code_CODE_BAD_REQUEST, "the sealed account differs from the authenticated one"), "unknown"
	}
	now := s.cfg.Now()
	if d := now.Sub(time.UnixMilli(req.GetTimeUnixMs())); d > Freshness || d < -Freshness {
		return fail(vaultv1.Code_CODE_STALE, fmt.Sprintf("request time is %s from the vault's clock", d.Round(time.Second))), "unknown"
	}
	if claims, err := s.tokens.Verify(req.GetVaultToken()); err != nil || claims.Subject != account {
		// Whoever sealed this request (a relay can seal requests too: the
		// fleet key is public) holds no vault token for the account.
		s.metrics.tokenRefusals.Inc()
		return fail(vaultv1.Code_CODE_UNAUTHENTICATED, "the vault token is missing, invalid, expired or for another account: get a fresh one from the app's backend"), "unauthenticated"
	}
	cmd := vaultstate.Command{Time: now.UnixMilli(), RecordID: s.recordID(account)}
	copy(cmd.RequestID[:], req.GetRequestId())
	switch op := req.GetOp().(type) {
	case *vaultv1.Request_RegisterStart:
		return s.registerStart(ctx, account, cmd, req.GetTimeUnixMs(), op.RegisterStart), "register_start"
	case *vaultv1.Request_RegisterFinish:
		return s.registerFinish(ctx, account, cmd, req.GetTimeUnixMs(), op.RegisterFinish), "register_finish"
	case *vaultv1.Request_LoginStart:
		return s.loginStart(ctx, account, cmd, op.LoginStart), "login_start"
	case *vaultv1.Request_LoginFinish:
		return s.loginFinish(ctx, cmd, op.LoginFinish), "login_finish"
	case *vaultv1.Request_Disable:
		return s.disable(ctx, cmd, req.GetTimeUnixMs(), op.Disable), "disable"
	case *vaultv1.Request_Status:
		return s.status(ctx, cmd), "status"
	}
	return fail(vaultv1.Code_CODE_BAD_REQUEST, "unknown operation"), "unknown"
}

// apply commits cmd and returns its result, or a failure response.
func (s *Server) apply(ctx context.Context, cmd vaultstate.Command) (vaultstate.Result, *vaultv1.Response) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ApplyTimeout)
	defer cancel()
	res, err := s.cfg.Replica.Apply(ctx, cmd)
	if err != nil {
		// Not committed, or not known to be: nothing may leave the vault.
		return nil, fail(vaultv1.Code_CODE_UNAVAILABLE, "the vault could not commit the request; retry")
	}
	if e, ok := res.(*vaultstate.Error); ok {
		return nil, stateError(e)
	}
	return res, nil
}

func stateError(e *vaultstate.Error) *vaultv1.Response {
	code := vaultv1.Code_CODE_BAD_REQUEST
	switch e.Code {
	case vaultstate.CodeWrongPassword:
		code = vaultv1.Code_CODE_WRONG_PASSWORD
	case vaultstate.CodeDestroyed:
		code = vaultv1.Code_CODE_DESTROYED
	case vaultstate.CodeUnauthorized:
		code = vaultv1.Code_CODE_UNAUTHORIZED
	case vaultstate.CodeLoginExpired:
		code = vaultv1.Code_CODE_LOGIN_EXPIRED
	case vaultstate.CodeReplay:
		code = vaultv1.Code_CODE_REPLAY
	case vaultstate.CodeNotRegistered:
		code = vaultv1.Code_CODE_NOT_REGISTERED
	case vaultstate.CodeThrottled:
		code = vaultv1.Code_CODE_THROTTLED
	case vaultstate.CodeUnavailable, vaultstate.CodeConflict:
		code = vaultv1.Code_CODE_UNAVAILABLE
	}
	return &vaultv1.Response{Error: &vaultv1.Error{Code: code, Message: e.Message, GuessesLeft: e.GuessesLeft, GuessLimit: e.GuessLimit, RetryAfterMs: e.RetryAfter}}
}

func auth(ticket, proof, sig []byte, at int64) vaultstate.Auth {
	switch {
	case len(sig) == ed25519.SignatureSize:
		a := vaultstate.Auth{Kind: vaultstate.AuthSignature, SignedAt: at}
		copy(a.Sig[:], sig)
		return a
	case len(ticket) > 0:
		return vaultstate.Auth{Kind: vaultstate.AuthTicket, Hash: vaultstate.HashTicket(ticket)}
	case len(proof) > 0:
		return vaultstate.Auth{Kind: vaultstate.AuthProof, Hash: vaultstate.HashKeyProof(proof)}
	}
	return vaultstate.Auth{}
}

func toState(k *vaultv1.KSFParams) (vaultstate.KSFParams, pake.KSF, error) {
	if k == nil {
		return vaultstate.KSFParams{}, pake.KSF{}, errors.New("no key-stretching profile")
	}
	p, err := pake.ParseKSF(k.GetAlgorithm(), k.GetTime(), k.GetMemoryKib(), k.GetThreads())
	if err != nil {
		return vaultstate.KSFParams{}, pake.KSF{}, err
	}
	return vaultstate.KSFParams{Time: p.Time, MemoryKiB: p.MemoryKiB, Threads: p.Threads}, p, nil
}

func fromState(k vaultstate.KSFParams) *vaultv1.KSFParams {
	return &vaultv1.KSFParams{Algorithm: pake.KSFAlgorithm, Time: k.Time, MemoryKib: k.MemoryKiB, Threads: k.Threads}
}

func (s *Server) registerStart(ctx context.Context, account string, cmd vaultstate.Command, at int64, op *vaultv1.RegisterStart) *vaultv1.Response {
	if len(op.GetRegistrationRequest()) != pake.RegistrationRequestSize {
		return fail(vaultv1.Code_CODE_BAD_REQUEST, "malformed registration request")
	}
	check := &vaultstate.RegisterCheck{Auth: auth(op.GetLoginTicket(), op.GetKeyProof(), op.GetKeySignature(), at)}
	var blinded []byte
	if s.th != nil {
		b, err := pake.RegistrationBlindedElement(op.GetRegistrationRequest())
		if err != nil {
			return fail(vaultv1.Code_CODE_BAD_REQUEST, "malformed registration request")
		}
		// New records go to the newest generation of shares this leader
		// holds; the reservation pins it for the RegisterFinish.
		blinded, check.Blinded, check.ShareGen = b, vaultstate.HashBlinded(b), s.th.newest
	}
	cmd.Op = check
	res, bad := s.apply(ctx, cmd)
	if bad != nil {
		return bad
	}
	r := res.(*vaultstate.RegisterCheckResult)
	var out []byte
	var err error
	if s.th != nil {
		// Every replica that applied the RegisterCheck evaluates its share
		// of the new epoch's key for this element only.
		z, _, cerr := s.th.combine(ctx, &evalRequest{Kind: evalRegister, Account: account, Epoch: r.Epoch, Blinded: blinded, Gen: check.ShareGen}, nil)
		if cerr != nil {
			s.log.Warn("threshold registration: no evaluation", "err", cerr)
			return fail(vaultv1.Code_CODE_UNAVAILABLE, "too few vault replicas answered for this registration; retry")
		}
		out, err = s.opaque.RegistrationResponseFromEvaluation(z)
	} else {
		out, err = s.opaque.RegistrationResponse(pake.CredentialID(account, r.Epoch), op.GetRegistrationRequest())
	}
	if err != nil {
		return fail(vaultv1.Code_CODE_BAD_REQUEST, "malformed registration request")
	}
	return &vaultv1.Response{Result: &vaultv1.Response_RegisterStart{RegisterStart: &vaultv1.RegisterStartResult{RegistrationResponse: out, Epoch: r.Epoch}}}
}

func (s *Server) registerFinish(ctx context.Context, account string, cmd vaultstate.Command, at int64, op *vaultv1.RegisterFinish) *vaultv1.Response {
	if err := pake.ValidateRecord(op.GetRegistrationRecord()); err != nil {
		return fail(vaultv1.Code_CODE_BAD_REQUEST, "malformed registration record")
	}
	ks, k, err := toState(op.GetKsf())
	if err == nil {
		if s.cfg.AllowWeakKSF {
			err = k.ValidateAllowWeak()
		} else {
			err = k.Validate()
		}
	}
	if err != nil {
		return fail(vaultv1.Code_CODE_BAD_REQUEST, "unacceptable key-stretching profile: "+err.Error())
	}
	if n := len(op.GetWrappedKey()); n == 0 || n > maxWrappedKey || len(op.GetKeyProofHash()) != vaultstate.HashSize {
		return fail(vaultv1.Code_CODE_BAD_REQUEST, "malformed wrapped key or key proof hash")
	}
	rec := vaultstate.Record{Opaque: op.GetRegistrationRecord(), KSF: ks, WrappedKey: op.GetWrappedKey()}
	copy(rec.ProofHash[:], op.GetKeyProofHash())
	switch k := op.GetKeyProofPublic(); len(k) {
	case 0:
	case ed25519.PublicKeySize:
		rec.ProofKey = k
	default:
		return fail(vaultv1.Code_CODE_BAD_REQUEST, "malformed key proof public key")
	}
	if s.th != nil {
		// The replicas' public shares of the record's key, of the
		// generation its RegisterStart reserved: what its logins' partial
		// evaluations are checked against. The record keeps its
		// credential id so that a reshare can derive its shares.
		acc, err := s.cfg.Replica.Lookup(cmd.RecordID)
		if err != nil || acc == nil || acc.Reserved != op.GetEpoch() || acc.ReservedGen == 0 {
			return fail(vaultv1.Code_CODE_BAD_REQUEST, "stale registration: no RegisterStart of this epoch is under way on a threshold fleet; start the registration again")
		}
		rec.ShareGen, rec.CredID = acc.ReservedGen, pake.CredentialID(account, op.GetEpoch())
		if rec.PublicShares, err = s.th.publicShares(ctx, account, op.GetEpoch(), acc.ReservedGen); err != nil {
			s.log.Warn("threshold registration: no public shares", "err", err)
			return fail(vaultv1.Code_CODE_UNAVAILABLE, "too few vault replicas answered for this registration; retry")
		}
	}
	cmd.Op = &vaultstate.Register{Epoch: op.GetEpoch(), GuessLimit: s.cfg.GuessLimit, Record: rec, Auth: auth(op.GetLoginTicket(), op.GetKeyProof(), op.GetKeySignature(), at)}
	res, bad := s.apply(ctx, cmd)
	if bad != nil {
		return bad
	}
	r := res.(*vaultstate.RegisterResult)
	s.metrics.registrations.Inc()
	return &vaultv1.Response{Result: &vaultv1.Response_RegisterFinish{RegisterFinish: &vaultv1.RegisterFinishResult{Epoch: r.Epoch, GuessLimit: r.GuessLimit}}}
}

func (s *Server) loginStart(ctx context.Context, account string, cmd vaultstate.Command, op *vaultv1.LoginStart) *vaultv1.Response {
	if len(op.GetKe1()) != pake.KE1Size {
		return fail(vaultv1.Code_CODE_BAD_REQUEST, "malformed KE1")
	}
	// The record can change between reading it and committing the login
	// (a concurrent registration): the state machine then answers
	// Conflict and the KE2 is recomputed. Two tries are plenty.
	for try := 0; ; try++ {
		acc, err := s.cfg.Replica.Lookup(cmd.RecordID)
		if err != nil {
			return fail(vaultv1.Code_CODE_UNAVAILABLE, "the vault cannot read its state; retry")
		}
		if acc == nil || !acc.Live() {
			// No live record in this replica's state. There are no fake
			// answers (PROTOCOL.md §5.3: whoever holds a vault token for
			// the account can ask Status, so a fake hides nothing from
			// anyone allowed to ask): the answer is NOT_REGISTERED or
			// DESTROYED, confirmed by a committed read so that a replica
			// lagging behind a fresh registration does not deny it.
			registered, bad := s.confirmNoRecord(ctx, cmd)
			if bad != nil {
				return bad
			}
			if registered && try == 0 {
				continue
			}
			if registered {
				return fail(vaultv1.Code_CODE_UNAVAILABLE, "the vault's state is changing under this login; retry")
			}
			return fail(vaultv1.Code_CODE_NOT_REGISTERED, "no backup key is stored in the vault for this account; nothing was counted")
		}
		shown := pake.KSF{Time: acc.Record.KSF.Time, MemoryKiB: acc.Record.KSF.MemoryKiB, Threads: acc.Record.KSF.Threads}
		if !op.GetAcceptWeakKsf() && shown.Validate() != nil {
			// The client would refuse this profile after KE2; refuse it
			// now, before a guess is counted.
			return fail(vaultv1.Code_CODE_KSF_REFUSED, fmt.Sprintf("the record's key stretching (%s) is below the floor this client accepts; nothing was counted", shown))
		}
		var id vaultstate.LoginID
		rand.Read(id[:])
		start := &vaultstate.LoginStart{Epoch: acc.Epoch, LoginID: id, Pacing: *s.cfg.Pacing}
		var ke2, blinded []byte
		thresholdRecord := len(acc.Record.PublicShares) > 0
		switch {
		case thresholdRecord && s.th == nil:
			return fail(vaultv1.Code_CODE_UNAVAILABLE, "this vault replica holds no OPRF share for a threshold record; the fleet is misconfigured")
		case thresholdRecord:
			// The KE2 is made after the guess is counted, from the
			// replicas' partial evaluations (thresholdKE2).
			if blinded, err = pake.BlindedElement(op.GetKe1()); err != nil {
				return fail(vaultv1.Code_CODE_BAD_REQUEST, "malformed KE1")
			}
			start.Blinded = vaultstate.HashBlinded(blinded)
		case len(s.cfg.Secrets.OPAQUE.OPRFSeed) == 0:
			return fail(vaultv1.Code_CODE_UNAVAILABLE, "this record's OPRF key comes from the fleet's OPRF seed, which a threshold fleet does not hold; re-enrol the password")
		default:
			var mac []byte
			ke2, mac, err = s.opaque.GenerateKE2(pake.CredentialID(account, acc.Epoch), acc.Record.Opaque, op.GetKe1())
			if err != nil {
				return fail(vaultv1.Code_CODE_BAD_REQUEST, "malformed KE1")
			}
			start.MACHash = vaultstate.HashMAC(mac)
			clear(mac)
		}
		cmd.Op = start
		ksf := fromState(acc.Record.KSF)
		actx, cancel := context.WithTimeout(ctx, s.cfg.ApplyTimeout)
		res, err := s.cfg.Replica.Apply(actx, cmd)
		cancel()
		if err != nil {
			return fail(vaultv1.Code_CODE_UNAVAILABLE, "the vault could not commit the request; retry")
		}
		if e, ok := res.(*vaultstate.Error); ok {
			if e.Code == vaultstate.CodeConflict && try == 0 {
				// The state machine recorded the request id with the
				// refused command; the retry is a new command with an id
				// derived from it (a replay of the client's request is
				// still refused under the original id).
				sum := sha256.Sum256(append(cmd.RequestID[:], "coffer vault v1 conflict retry"...))
				copy(cmd.RequestID[:], sum[:])
				continue
			}
			if e.Code == vaultstate.CodeDestroyed {
				s.metrics.destroyed.Inc()
				if _, live := cmd.Op.(*vaultstate.LoginStart); live {
					s.metrics.lockouts.Inc() // the record was live: erased now
				}
			}
			return stateError(e)
		}
		r := res.(*vaultstate.LoginStartResult)
		if !r.Retried {
			s.metrics.guesses.Inc()
		}
		loginID := r.LoginID[:] // a retried request keeps its pending login's id
		if thresholdRecord {
			var bad *vaultv1.Response
			if ke2, bad = s.thresholdKE2(ctx, account, cmd, acc, r.LoginID, op.GetKe1(), blinded); bad != nil {
				return bad
			}
		}
		// Only now, with the guess committed, does KE2 leave the vault.
		return &vaultv1.Response{Result: &vaultv1.Response_LoginStart{LoginStart: &vaultv1.LoginStartResult{
			Ke2: ke2, Ksf: ksf, LoginId: loginID, GuessesUsed: r.GuessesUsed, GuessLimit: r.GuessLimit,
		}}}
	}
}

// thresholdKE2 makes a threshold record's KE2 once its LoginStart is
// committed: the replicas that applied it evaluate their shares for the
// login's blinded element, the combined evaluation makes the KE2, and a
// LoginMAC entry gives the pending login its MAC hash before the KE2
// leaves (so any later leader can finish the login).
func (s *Server) thresholdKE2(ctx context.Context, account string, cmd vaultstate.Command, acc *vaultstate.Account, loginID vaultstate.LoginID, ke1, blinded []byte) ([]byte, *vaultv1.Response) {
	public, err := DecodePublicShares(acc.Record.PublicShares)
	if err != nil {
		return nil, fail(vaultv1.Code_CODE_UNAVAILABLE, "the record's public shares do not decode")
	}
	z, _, err := s.th.combine(ctx, &evalRequest{Kind: evalLogin, Account: account, Epoch: acc.Epoch, LoginID: hex.EncodeToString(loginID[:]), Blinded: blinded, Gen: acc.Record.ShareGen}, public)
	if err != nil {
		// Counted, and no KE2: the client retries the same request, which
		// is answered again without counting (the pending login stays).
		s.log.Warn("threshold login: no evaluation", "err", err)
		return nil, fail(vaultv1.Code_CODE_UNAVAILABLE, "too few vault replicas answered for this login; retry")
	}
	ke2, mac, err := s.opaque.KE2FromEvaluation(acc.Record.Opaque, ke1, z)
	if err != nil {
		return nil, fail(vaultv1.Code_CODE_BAD_REQUEST, "malformed KE1")
	}
	probe := cmd
	rand.Read(probe.RequestID[:]) // the leader's own entry: a retried login makes another
	probe.Op = &vaultstate.LoginMAC{LoginID: loginID, MACHash: vaultstate.HashMAC(mac)}
	clear(mac)
	if _, bad := s.apply(ctx, probe); bad != nil {
		return nil, bad
	}
	return ke2, nil
}

// confirmNoRecord asks the state machine, through the log, whether the
// account has a live record after all. The read uses an id derived from the
// request's, so the LoginStart that may follow keeps the client's own id.
// A destroyed record answers DESTROYED.
func (s *Server) confirmNoRecord(ctx context.Context, cmd vaultstate.Command) (registered bool, bad *vaultv1.Response) {
	probe := cmd
	sum := sha256.Sum256(append(cmd.RequestID[:], "coffer vault v1 login status probe"...))
	copy(probe.RequestID[:], sum[:])
	probe.Op = &vaultstate.Status{}
	res, bad := s.apply(ctx, probe)
	if bad != nil {
		return false, bad
	}
	r := res.(*vaultstate.StatusResult)
	if r.Destroyed {
		s.metrics.destroyed.Inc()
		return false, stateError(&vaultstate.Error{Code: vaultstate.CodeDestroyed, Message: "the guess limit was reached and the record is erased for good; register again to set a new password"})
	}
	return r.Registered, nil
}

func (s *Server) loginFinish(ctx context.Context, cmd vaultstate.Command, op *vaultv1.LoginFinish) *vaultv1.Response {
	if len(op.GetLoginId()) != vaultstate.LoginIDSize || len(op.GetKe3()) != pake.KE3Size {
		return fail(vaultv1.Code_CODE_BAD_REQUEST, "malformed KE3")
	}
	ticket := make([]byte, 32)
	rand.Read(ticket)
	var id vaultstate.LoginID
	copy(id[:], op.GetLoginId())
	cmd.Op = &vaultstate.LoginFinish{LoginID: id, ClientMAC: op.GetKe3(), TicketHash: vaultstate.HashTicket(ticket)}
	res, bad := s.apply(ctx, cmd)
	if bad != nil {
		switch bad.GetError().GetCode() {
		case vaultv1.Code_CODE_DESTROYED:
			s.metrics.destroyed.Inc()
			s.metrics.lockouts.Inc() // a pending login's record: erased now
		case vaultv1.Code_CODE_WRONG_PASSWORD:
			s.metrics.wrong.Inc()
		}
		return bad
	}
	r := res.(*vaultstate.LoginFinishResult)
	s.metrics.recoveries.Inc()
	// A version-1 record on a threshold fleet, or a threshold record from
	// before records kept their credential id (which a reshare cannot
	// move): the client moves it (PROTOCOL.md §7, migration).
	reenroll := s.th != nil && !r.Reshareable
	return &vaultv1.Response{Result: &vaultv1.Response_LoginFinish{LoginFinish: &vaultv1.LoginFinishResult{
		Reenroll:               reenroll,
		WrappedKey:             r.WrappedKey,
		FailedGuesses:          uint32(len(r.FailedGuessTimes)),
		FailedGuessTimesUnixMs: r.FailedGuessTimes,
		PreviousSuccessUnixMs:  r.PreviousSuccess,
		LoginTicket:            ticket,
		Epoch:                  r.Epoch,
	}}}
}

func (s *Server) disable(ctx context.Context, cmd vaultstate.Command, at int64, op *vaultv1.Disable) *vaultv1.Response {
	cmd.Op = &vaultstate.Disable{Auth: auth(op.GetLoginTicket(), op.GetKeyProof(), op.GetKeySignature(), at)}
	if _, bad := s.apply(ctx, cmd); bad != nil {
		return bad
	}
	return &vaultv1.Response{Result: &vaultv1.Response_Disable{Disable: &vaultv1.DisableResult{}}}
}

func (s *Server) status(ctx context.Context, cmd vaultstate.Command) *vaultv1.Response {
	cmd.Op = &vaultstate.Status{}
	res, bad := s.apply(ctx, cmd)
	if bad != nil {
		return bad
	}
	r := res.(*vaultstate.StatusResult)
	return &vaultv1.Response{Result: &vaultv1.Response_Status{Status: &vaultv1.StatusResult{
		Registered: r.Registered, Destroyed: r.Destroyed, Disabled: r.Disabled,
		GuessesUsed: r.GuessesUsed, GuessLimit: r.GuessLimit,
		FailedGuessTimesUnixMs: r.GuessTimes, LastSuccessUnixMs: r.LastSuccess,
		Epoch: r.Epoch, Ksf: fromState(r.KSF), KeyProofHash: r.ProofHash,
	}}}
}
