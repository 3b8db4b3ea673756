package serve

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/cofferhq/coffer/internal/server/fleetca"
	"github.com/cofferhq/coffer/internal/server/harden"
	"github.com/cofferhq/coffer/internal/server/replica"
	"github.com/cofferhq/coffer/internal/server/sealing"
	"github.com/cofferhq/coffer/internal/server/sealing/keyfile"
	"github.com/cofferhq/coffer/internal/server/sealing/pkcs11"
	"github.com/cofferhq/coffer/internal/server/vault"
	"github.com/cofferhq/coffer/internal/server/vaultstate"
	"github.com/cofferhq/coffer/token"
)

// Env is what Open takes from the process around it.
type Env struct {
	// Logger receives the replica's structured log (default: discard).
	Logger *slog.Logger
	// Getenv reads the environment (a PKCS#11 PIN named by pin_env, or
	// COFFER_PKCS11_PIN); default os.Getenv.
	Getenv func(string) string
}

// HintError is an error with what to do about it, for the operator.
type HintError struct {
	Err  error
	Hint string
}

func (e *HintError) Error() string { return e.Err.Error() }
func (e *HintError) Unwrap() error { return e.Err }

// Open reads what c names — the fleet secrets, the sealing key or token,
// the TLS material — and returns the Spec of the replica it configures.
// Nothing listens yet. The caller closes the Spec if it never starts it.
func Open(c *Config, env Env) (*Spec, error) {
	if err := c.Check(); err != nil {
		return nil, err
	}
	if env.Getenv == nil {
		env.Getenv = os.Getenv
	}
	log := env.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if c.DataCentre != "" {
		log = log.With("data_centre", c.DataCentre)
	}
	s := &Spec{
		ID: c.ID, DataCentre: c.DataCentre, DataDir: c.dataDir(),
		Listen: c.Listen, MetricsListen: c.MetricsListen, RaftBind: c.RaftBind, RaftAdvertise: c.RaftAdvertise,
		Bootstrap: c.Bootstrap, GuessLimit: c.GuessLimit, InsecureDevKSF: c.InsecureDevKSF, InsecurePlainRaft: c.InsecurePlainRaft,
		MarkInterval: c.MarkInterval.Duration, Logger: log,
		URLs: map[string]string{}, DataCentres: map[string]string{},
	}
	if p := c.Pacing; p != nil {
		s.Pacing = &vaultstate.Pacing{Free: p.Free, Base: uint32(p.Base.Seconds()), Max: uint32(max(p.Max.Duration, p.Base.Duration).Seconds())}
	}
	if t := c.RaftTiming; t != nil {
		s.Timing = Timing{Heartbeat: t.Heartbeat.Duration, Election: t.Election.Duration, LeaderLease: t.LeaderLease.Duration, Commit: t.Commit.Duration}
	}
	if sn := c.Snapshots; sn != nil {
		s.SnapshotThreshold, s.SnapshotInterval, s.TrailingLogs = sn.Threshold, sn.Interval.Duration, sn.TrailingLogs
	}
	if c.RaftSourceAddr != "" {
		d, err := replica.SourceDialer(c.RaftSourceAddr)
		if err != nil {
			return nil, fmt.Errorf("%w: --raft-source-addr (raft_source_addr): %v", ErrConfig, err)
		}
		s.RaftSource, s.RaftSourceAddr = d, c.RaftSourceAddr
	}
	for _, p := range c.Peers {
		if p.URL != "" {
			s.URLs[p.ID] = strings.TrimRight(p.URL, "/")
		}
		if p.DataCentre != "" {
			s.DataCentres[p.ID] = p.DataCentre
		}
		s.Peers = append(s.Peers, replica.Peer{ID: p.ID, Addr: p.Raft})
	}

	var err error
	if s.Tokens, err = loadTokenVerifier(c); err != nil {
		return nil, err
	}
	if s.TLS, err = loadTLS(c.TLS); err != nil {
		return nil, err
	}
	if s.TLS != nil && s.TLS.ID != c.ID {
		log.Warn("the TLS certificate names another replica id", "certificate_id", s.TLS.ID, "id", c.ID)
	}
	s.URL = strings.TrimRight(c.URL, "/")
	seal, err := OpenSealing(c.Sealing, env.Getenv)
	if err != nil {
		return nil, &HintError{Err: err, Hint: "Check the sealing configuration: a key file from 'coffer vault seal-key', or a PKCS#11 token key from 'coffer vault pkcs11-keygen' (OPERATIONS.md)"}
	}
	if c.OPRFShare != "" {
		var kek sealing.Key
		if seal != nil {
			kek = seal.Key
		}
		for _, path := range strings.Split(c.OPRFShare, ",") {
			path = strings.TrimSpace(path)
			set, err := vault.LoadShareFileSealed(path, kek)
			if err != nil {
				if seal != nil {
					seal.Close()
				}
				return nil, fmt.Errorf("%w: %v", ErrConfig, err)
			}
			if kek != nil && !set.Sealed {
				log.Warn("this replica seals its disk but its OPRF share file is plaintext: seal it with 'coffer vault seal-share' and delete the plaintext copy", "file", path)
			}
			s.Shares = append(s.Shares, set)
		}
	}
	if seal != nil {
		s.closers = append(s.closers, seal.Close)
		// Sealing configured: the secrets must be sealed too. A plaintext
		// copy beside a sealed disk gives away the fleet's keys (and, for a
		// directory sealed before per-replica keys, the disk's key: the
		// legacy storage key derives from it).
		if data, rerr := os.ReadFile(c.secretsPath()); rerr == nil && !sealing.IsWrappedFile(data) {
			clear(data)
			s.Close()
			return nil, &HintError{
				Err: fmt.Errorf("%w: the fleet secrets %s are not sealed, but this replica seals its disk: a plaintext copy is the key to that disk in the clear", ErrConfig, c.secretsPath()),
				Hint: fmt.Sprintf("Seal them with 'coffer vault seal-secrets --in %s --out SEALED --key-file KEY' (or the --pkcs11-* flags), "+
					"point \"secrets\" in --config at SEALED, and delete the plaintext copy from this host", c.secretsPath()),
			}
		}
		s.Secrets, err = vault.LoadSecretsSealed(c.secretsPath(), seal.Key)
		if err == nil {
			// The disk's own data key, wrapped by this replica's key file or
			// token in the data directory (made on the first start); a
			// directory sealed before per-replica keys keeps the fleet
			// storage key until it is moved (OPERATIONS.md).
			legacy := s.Secrets.StorageKey()
			key, status, kerr := replica.DataKey(s.DataDir, seal.Key, legacy)
			if kerr != nil {
				s.Close()
				return nil, &HintError{Err: kerr, Hint: "Configure the key file or PKCS#11 token this replica's data directory was sealed with, " +
					"or start it with an empty data directory (it catches up from the fleet)"}
			}
			s.SealingKey, s.Marks = key, seal.Marks
			switch status {
			case replica.DataKeyLegacy:
				log.Warn("this replica's data directory is sealed under the fleet-wide storage key (from before per-replica keys): "+
					"a copy of it plus any replica's key file or fleet secrets opens it. Move it to its own key: stop this replica, "+
					"move its data directory away, and start it again; it rejoins from a snapshot (OPERATIONS.md, \"Per-replica storage keys\")",
					"data_dir", s.DataDir)
			case replica.DataKeyCreated:
				log.Info("made this replica's own storage key", "file", filepath.Join(s.DataDir, replica.DataKeyFile), "key", key.Name())
				s.LegacySealingKey = legacy
			default:
				s.LegacySealingKey = legacy
			}
			if seal.Marks == nil {
				log.Warn("sealing with a key file: no rollback defence (the high-water mark needs a PKCS#11 token)")
			}
		}
	} else {
		s.Secrets, err = vault.LoadSecrets(c.secretsPath())
	}
	if err != nil {
		s.Close()
		h := "Run 'coffer vault init --dir DIR' once for the fleet, and copy secrets.json to every replica's --dir"
		if errors.Is(err, vault.ErrSecretsSealed) {
			h = "Configure the key file or PKCS#11 token the secrets were sealed with ('sealing' in --config, or --sealing-key-file)"
		}
		return nil, &HintError{Err: err, Hint: h}
	}
	hardenProcess(s.Secrets, log)
	return s, nil
}

// hardenProcess keeps the fleet secrets out of core files, other
// processes' reach and swap, as far as the platform allows: it is called
// once they are loaded. Failures are logged, not fatal (mlock is limited by
// RLIMIT_MEMLOCK; raise it, e.g. LimitMEMLOCK= in the systemd unit).
func hardenProcess(sec *vault.Secrets, log *slog.Logger) {
	if st, err := harden.Process(); err != nil {
		log.Warn("could not disable core dumps and tracing of this process, which holds the fleet secrets", "error", err, "dumpable", st.Dumpable, "core_limit", st.CoreLimit)
	}
	if err := harden.Lock(sec.RecordIDKey[:], sec.OPAQUE.OPRFSeed, sec.OPAQUE.PrivateKey); err != nil {
		log.Warn("could not lock the fleet secrets in memory (they may be swapped out); raise RLIMIT_MEMLOCK", "error", err)
	}
}

// OpenedSealing is a replica's key-encryption key and, with a PKCS#11
// token, its mark store. Close releases the token.
type OpenedSealing struct {
	Key   sealing.Key
	Marks sealing.MarkStore // nil with a key file: no rollback defence
	close func() error
}

// Close releases the token session, if any.
func (o *OpenedSealing) Close() error { return o.close() }

// PKCS11PIN reads a token's PIN from the file or environment variable the
// configuration names, else COFFER_PKCS11_PIN.
func PKCS11PIN(c *PKCS11, getenv func(string) string) (string, error) {
	switch {
	case c.PINFile != "":
		b, err := os.ReadFile(c.PINFile)
		if err != nil {
			return "", fmt.Errorf("PKCS#11 PIN file: %w", err)
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	case c.PINEnv != "":
		if v := getenv(c.PINEnv); v != "" {
			return v, nil
		}
		return "", fmt.Errorf("PKCS#11 PIN: the environment variable %s is empty", c.PINEnv)
	}
	if v := getenv("COFFER_PKCS11_PIN"); v != "" {
		return v, nil
	}
	return "", errors.New("PKCS#11 PIN: set pin_file or pin_env in the sealing configuration, or COFFER_PKCS11_PIN")
}

// OpenSealing opens the sealing key c names (nil, nil: no sealing).
func OpenSealing(c *Sealing, getenv func(string) string) (*OpenedSealing, error) {
	if c == nil || (c.KeyFile == "" && c.PKCS11 == nil) {
		return nil, nil
	}
	if c.KeyFile != "" && c.PKCS11 != nil {
		return nil, errors.New("sealing: give key_file or pkcs11, not both")
	}
	if c.KeyFile != "" {
		k, err := keyfile.Load(c.KeyFile)
		if err != nil {
			return nil, err
		}
		return &OpenedSealing{Key: k, close: func() error { return nil }}, nil
	}
	pin, err := PKCS11PIN(c.PKCS11, getenv)
	if err != nil {
		return nil, err
	}
	tok, err := pkcs11.Open(pkcs11.Config{Module: c.PKCS11.Module, TokenLabel: c.PKCS11.TokenLabel, KeyLabel: c.PKCS11.KeyLabel, PIN: pin})
	if err != nil {
		return nil, err
	}
	return &OpenedSealing{Key: tok.Key(), Marks: tok, close: tok.Close}, nil
}

// loadTokenVerifier reads the app backend's public key c names.
func loadTokenVerifier(c *Config) (*token.Verifier, error) {
	b, err := os.ReadFile(c.AppTokenKey)
	if err != nil {
		return nil, fmt.Errorf("%w: app_token_key: %v", ErrConfig, err)
	}
	pub, err := token.ParsePublicKeyPEM(b)
	if err != nil {
		return nil, fmt.Errorf("%w: app_token_key %s: %v", ErrConfig, c.AppTokenKey, err)
	}
	return &token.Verifier{Key: pub, Issuer: c.AppTokenIssuer, Audience: c.VaultAudience, Leeway: token.DefaultLeeway}, nil
}

// loadTLS loads the mutual-TLS material c names (nil, nil: no TLS).
func loadTLS(c *TLS) (*fleetca.TLS, error) {
	if c == nil || (c.Cert == "" && c.Key == "" && c.CA == "") {
		return nil, nil
	}
	if c.Cert == "" || c.Key == "" || c.CA == "" {
		return nil, fmt.Errorf("%w: tls: give cert, key and ca (from 'coffer vault cert')", ErrConfig)
	}
	return fleetca.LoadTLS(c.Cert, c.Key, c.CA)
}

// IsLoopbackHost reports whether h names this machine only.
func IsLoopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}
