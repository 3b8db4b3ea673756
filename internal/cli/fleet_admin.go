package cli

// 'coffer vault cert|seal-key|seal-secrets|pkcs11-keygen|join|remove|status'.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/cofferhq/coffer/internal/server/serve"

	"github.com/spf13/cobra"

	"github.com/cofferhq/coffer/internal/server/fleetca"
	"github.com/cofferhq/coffer/internal/server/sealing/keyfile"
	"github.com/cofferhq/coffer/internal/server/sealing/pkcs11"
	"github.com/cofferhq/coffer/internal/server/vault"
)

func (a *app) vaultCertCommand() *cobra.Command {
	var dir, id, hosts, out string
	var validity time.Duration
	cmd := &cobra.Command{
		Use:   "cert --dir FLEETDIR --id ID --host 10.0.0.1[,vault-1.example] --out DIR",
		Short: "Issue a replica's mutual-TLS certificate from the fleet CA",
		Long: `Cert issues replica ID a certificate signed by the fleet CA (made by 'coffer
vault init' in FLEETDIR: fleet-ca.crt, and fleet-ca.key, which is needed
here and should otherwise be offline). The certificate names the replica
(common name and URI SAN coffer-replica://ID) and the hosts its peers and
operators reach it at (--host: IP addresses and DNS names), and serves for
both TLS server and client authentication.

It writes DIR/replica.crt, DIR/replica.key (0600) and DIR/fleet-ca.crt;
give them to the replica (tls.cert, tls.key, tls.ca in its config). An
operator's workstation gets a certificate the same way (any id, e.g.
"admin-alice") to use 'coffer vault status|join|remove' against a fleet
with TLS.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir = a.pick(dir, "COFFER_VAULT_DIR")
			if dir == "" || id == "" || hosts == "" || out == "" {
				return usagef("vault cert: give --dir FLEETDIR, --id ID, --host HOST[,HOST...] and --out DIR")
			}
			ca, err := fleetca.Load(dir)
			if err != nil {
				return fail("vault cert", err)
			}
			if err := ca.IssueFiles(out, id, splitList(hosts), validity); err != nil {
				return fail("vault cert", err)
			}
			files := map[string]any{"id": id, "cert": filepath.Join(out, fleetca.CertFile), "key": filepath.Join(out, fleetca.KeyFile), "ca": filepath.Join(out, fleetca.CACertFile)}
			if a.json {
				return a.printJSON(files)
			}
			a.say("Issued %s a certificate for %s: %s, %s (private key, 0600) and %s.", id, hosts, files["cert"], files["key"], files["ca"])
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "dir", "", "the fleet directory with fleet-ca.crt and fleet-ca.key (env COFFER_VAULT_DIR)")
	f.StringVar(&id, "id", "", "the replica's id")
	f.StringVar(&hosts, "host", "", "IP addresses and DNS names the replica is reached at, comma-separated")
	f.StringVar(&out, "out", "", "directory for replica.crt, replica.key and fleet-ca.crt")
	f.DurationVar(&validity, "validity", fleetca.CertValidity, "how long the certificate is valid")
	return cmd
}

func (a *app) vaultSealKeyCommand() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "seal-key --out FILE",
		Short: "Make a sealing key file (for replicas without a PKCS#11 token)",
		Long: `Seal-key makes a random sealing key file (0600; refuses to overwrite). A
replica configured with it ("sealing": {"key_file": FILE}, or
--sealing-key-file) seals its fleet secrets file and everything it stores.
Keep it off the data disk (another volume, a secrets mount): a key file
beside the data protects nothing. A PKCS#11 token is stronger and adds the
rollback defence ('coffer vault pkcs11-keygen').`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return usagef("vault seal-key: name the file with --out FILE")
			}
			k, err := keyfile.Create(out)
			if err != nil {
				return fail("vault seal-key", err)
			}
			if a.json {
				return a.printJSON(map[string]any{"key_file": out, "key_id": k.ID()})
			}
			a.say("Wrote sealing key %s (key id %s).", out, k.ID())
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "the key file to make (0600)")
	return cmd
}

// pkcs11Flags select a token key on the command line.
type pkcs11Flags struct{ cfg serve.PKCS11 }

func (p *pkcs11Flags) add(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&p.cfg.Module, "pkcs11-module", pkcs11.DefaultModule, "the PKCS#11 library")
	f.StringVar(&p.cfg.TokenLabel, "pkcs11-token", "", "the token's label")
	f.StringVar(&p.cfg.KeyLabel, "pkcs11-key-label", "", "the key's label (one per replica, e.g. coffer-vault-r1)")
	f.StringVar(&p.cfg.PINFile, "pkcs11-pin-file", "", "file holding the user PIN (else env COFFER_PKCS11_PIN)")
}

func (a *app) vaultPKCS11KeygenCommand() *cobra.Command {
	var p pkcs11Flags
	cmd := &cobra.Command{
		Use:   "pkcs11-keygen --pkcs11-token LABEL --pkcs11-key-label LABEL [--pkcs11-module LIB] [--pkcs11-pin-file FILE]",
		Short: "Generate a replica's sealing key inside a PKCS#11 token",
		Long: `Pkcs11-keygen generates an AES-256 key inside the token (sensitive,
non-extractable, encrypt/decrypt only) under --pkcs11-key-label; the
replica's high-water mark (rollback defence) is kept beside it under the
same label. Then seal the fleet secrets for this replica with it ('coffer
vault seal-secrets --pkcs11-...') and configure "sealing": {"pkcs11": {...}}.
OPERATIONS.md has the SoftHSM2 and HSM set-up.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if p.cfg.TokenLabel == "" || p.cfg.KeyLabel == "" {
				return usagef("vault pkcs11-keygen: give --pkcs11-token and --pkcs11-key-label")
			}
			pin, err := serve.PKCS11PIN(&p.cfg, a.Getenv)
			if err != nil {
				return usagef("vault pkcs11-keygen: %v", err)
			}
			tok, err := pkcs11.GenerateKey(pkcs11.Config{Module: p.cfg.Module, TokenLabel: p.cfg.TokenLabel, KeyLabel: p.cfg.KeyLabel, PIN: pin})
			if err != nil {
				return fail("vault pkcs11-keygen", err)
			}
			name := tok.Key().Name()
			tok.Close()
			if a.json {
				return a.printJSON(map[string]any{"key": name})
			}
			a.say("Generated %s.", name)
			return nil
		},
	}
	p.add(cmd)
	return cmd
}

func (a *app) vaultSealSecretsCommand() *cobra.Command {
	var in, out, keyFile string
	var p pkcs11Flags
	cmd := &cobra.Command{
		Use:   "seal-secrets --in secrets.json --out FILE (--key-file FILE | --pkcs11-token LABEL --pkcs11-key-label LABEL)",
		Short: "Seal the fleet secrets for one replica with its key file or token key",
		Long: `Seal-secrets writes a copy of the fleet secrets (secrets.json from 'coffer
vault init', plaintext, or a sealed copy if --in is sealed under the same
key) sealed under one replica's key file or PKCS#11 token key. Give each
replica its own sealed copy (its "secrets" path), and keep the plaintext
file only offline. The secrets also give the replica its storage key, so
this one file is all the sealed state a new replica needs.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if in == "" || out == "" {
				return usagef("vault seal-secrets: give --in and --out")
			}
			sc := &serve.Sealing{KeyFile: keyFile}
			if p.cfg.TokenLabel != "" {
				pc := p.cfg
				sc.PKCS11 = &pc
			}
			seal, err := serve.OpenSealing(sc, a.Getenv)
			if err != nil {
				return fail("vault seal-secrets", err)
			}
			if seal == nil {
				return usagef("vault seal-secrets: give --key-file or the --pkcs11-* flags")
			}
			defer seal.Close()
			s, err := vault.LoadSecretsSealed(in, seal.Key)
			if err != nil {
				return fail("vault seal-secrets", err)
			}
			if err := s.SaveSealed(out, seal.Key); err != nil {
				return fail("vault seal-secrets", err)
			}
			if a.json {
				return a.printJSON(map[string]any{"out": out, "sealed_by": seal.Key.Name()})
			}
			a.say("Wrote %s, sealed by %s.", out, seal.Key.Name())
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&in, "in", "", "the fleet secrets file")
	f.StringVar(&out, "out", "", "the sealed copy to write")
	f.StringVar(&keyFile, "key-file", "", "the replica's sealing key file")
	p.add(cmd)
	return cmd
}

// adminFlags reach a replica's admin endpoint.
type adminFlags struct {
	tlsDir, cert, key, ca string
}

func (f *adminFlags) add(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.tlsDir, "tls-dir", "", "directory with replica.crt, replica.key and fleet-ca.crt ('coffer vault cert --out')")
	fl.StringVar(&f.cert, "tls-cert", "", "client certificate from the fleet CA")
	fl.StringVar(&f.key, "tls-key", "", "its key")
	fl.StringVar(&f.ca, "tls-ca", "", "the fleet CA certificate")
}

func (f *adminFlags) client() (*http.Client, error) {
	if f.tlsDir != "" {
		if f.cert == "" {
			f.cert = filepath.Join(f.tlsDir, fleetca.CertFile)
		}
		if f.key == "" {
			f.key = filepath.Join(f.tlsDir, fleetca.KeyFile)
		}
		if f.ca == "" {
			f.ca = filepath.Join(f.tlsDir, fleetca.CACertFile)
		}
	}
	tr := &http.Transport{ForceAttemptHTTP2: true}
	if f.cert != "" || f.key != "" || f.ca != "" {
		tl, err := fleetca.LoadTLS(f.cert, f.key, f.ca)
		if err != nil {
			return nil, err
		}
		tr.TLSClientConfig = tl.ClientConfig("") // ServerName: the URL's host
	}
	return &http.Client{Transport: tr, Timeout: 40 * time.Second}, nil
}

// adminCall calls path on base; on 421 it follows the leader once.
func adminCall(ctx context.Context, c *http.Client, base, path string, body any, out any) error {
	for try := 0; ; try++ {
		var rd io.Reader
		method := http.MethodGet
		if body != nil {
			b, _ := json.Marshal(body)
			rd, method = bytes.NewReader(b), http.MethodPost
		}
		req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(base, "/")+path, rd)
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := c.Do(req)
		if err != nil {
			return fmt.Errorf("%w (is the replica up, and with TLS, is --tls-dir a certificate from the fleet CA?)", err)
		}
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			return json.Unmarshal(data, out)
		}
		var ae vault.AdminError
		json.Unmarshal(data, &ae)
		if resp.StatusCode == http.StatusMisdirectedRequest && ae.LeaderURL != "" && try < 3 {
			base = ae.LeaderURL
			continue
		}
		if resp.StatusCode == http.StatusMisdirectedRequest && ae.LeaderID == "" && try < 20 {
			// No leader known yet (an election, or a new replica that has
			// not heard from the leader): wait a little.
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(500 * time.Millisecond):
			}
			continue
		}
		if ae.Error == "" {
			ae.Error = strings.TrimSpace(string(data))
		}
		return fmt.Errorf("%s %s: %s (HTTP %d)", base, path, ae.Error, resp.StatusCode)
	}
}

func (a *app) vaultJoinCommand() *cobra.Command {
	var leader, id, raftAddr, url, dc string
	var af adminFlags
	cmd := &cobra.Command{
		Use:   "join --leader URL --id ID --raft ADDR --url URL [--dc DC]",
		Short: "Add a replica to a running fleet as a voter",
		Long: `Join asks the fleet (--leader: any replica's VaultService URL; a follower's
answer names the leader, and join follows it once) to add replica ID, whose
Raft address is --raft and VaultService is --url, as a voter. Start the new
replica first ('coffer vault serve' without --bootstrap, empty data
directory): it waits for the leader, which sends it the log or a snapshot.
Add one replica at a time and wait for 'coffer vault status' to show it
caught up.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if leader == "" || id == "" || raftAddr == "" {
				return usagef("vault join: give --leader URL, --id ID and --raft ADDR (and --url)")
			}
			c, err := af.client()
			if err != nil {
				return fail("vault join", err)
			}
			var st vault.Status
			if err := adminCall(cmd.Context(), c, leader, "/admin/join", vault.JoinRequest{ID: id, Raft: raftAddr, URL: url, DataCentre: dc}, &st); err != nil {
				return &opError{op: "vault join", err: err}
			}
			return a.printFleetStatus(st)
		},
	}
	f := cmd.Flags()
	f.StringVar(&leader, "leader", "", "a replica's VaultService URL (the leader's, or any: join follows the leader)")
	f.StringVar(&id, "id", "", "the new replica's id")
	f.StringVar(&raftAddr, "raft", "", "the new replica's Raft address HOST:PORT, as peers dial it")
	f.StringVar(&url, "url", "", "the new replica's VaultService URL")
	f.StringVar(&dc, "dc", "", "the new replica's data centre label")
	af.add(cmd)
	return cmd
}

func (a *app) vaultRemoveCommand() *cobra.Command {
	var leader, id string
	var af adminFlags
	cmd := &cobra.Command{
		Use:   "remove --leader URL --id ID",
		Short: "Remove a replica from the fleet",
		Long: `Remove asks the fleet's leader to remove replica ID from the configuration.
Remove a dead replica before adding its replacement, so the quorum does not
count it; stop the removed replica afterwards.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if leader == "" || id == "" {
				return usagef("vault remove: give --leader URL and --id ID")
			}
			c, err := af.client()
			if err != nil {
				return fail("vault remove", err)
			}
			var st vault.Status
			if err := adminCall(cmd.Context(), c, leader, "/admin/remove", vault.RemoveRequest{ID: id}, &st); err != nil {
				return &opError{op: "vault remove", err: err}
			}
			return a.printFleetStatus(st)
		},
	}
	f := cmd.Flags()
	f.StringVar(&leader, "leader", "", "a replica's VaultService URL")
	f.StringVar(&id, "id", "", "the replica to remove")
	af.add(cmd)
	return cmd
}

func (a *app) vaultStatusCommand() *cobra.Command {
	var url string
	var af adminFlags
	cmd := &cobra.Command{
		Use:   "status --url URL [--json]",
		Short: "Show a replica's view of the fleet: members, leader, indexes, health",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if url == "" {
				return usagef("vault status: give a replica's VaultService URL with --url")
			}
			c, err := af.client()
			if err != nil {
				return fail("vault status", err)
			}
			var st vault.Status
			if err := adminCall(cmd.Context(), c, url, "/admin/status", nil, &st); err != nil {
				return &opError{op: "vault status", err: err}
			}
			if err := a.printFleetStatus(st); err != nil {
				return err
			}
			if !st.Healthy {
				return &opError{op: "vault status", err: errors.New("unhealthy: " + strings.Join(st.Problems, "; "))}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&url, "url", "", "a replica's VaultService URL")
	af.add(cmd)
	return cmd
}

func (a *app) printFleetStatus(st vault.Status) error {
	if a.json {
		return a.printJSON(st)
	}
	w := a.Stdout
	health := "healthy"
	if !st.Healthy {
		health = "UNHEALTHY: " + strings.Join(st.Problems, "; ")
	}
	fmt.Fprintf(w, "replica %s", st.ID)
	if st.DataCentre != "" {
		fmt.Fprintf(w, " (%s)", st.DataCentre)
	}
	fmt.Fprintf(w, ": %s, term %d, %s\n", st.State, st.Term, health)
	fmt.Fprintf(w, "  log %d  commit %d  applied %d  snapshot %d", st.LastLogIndex, st.CommitIndex, st.AppliedIndex, st.LastSnapshotIndex)
	if st.LastContactAgo != "" {
		fmt.Fprintf(w, "  last contact %s ago", st.LastContactAgo)
	}
	fmt.Fprintln(w)
	leader := st.LeaderID
	if leader == "" {
		leader = "none"
	}
	fmt.Fprintf(w, "  leader %s %s\n  members (%d, quorum %d):\n", leader, st.LeaderURL, len(st.Members), len(st.Members)/2+1)
	ms := append([]vault.Member(nil), st.Members...)
	sort.Slice(ms, func(i, j int) bool { return ms[i].ID < ms[j].ID })
	for _, m := range ms {
		mark := " "
		if m.Leader {
			mark = "*"
		}
		fmt.Fprintf(w, "   %s %-12s raft %-21s %-28s %s\n", mark, m.ID, m.Raft, m.URL, m.DataCentre)
	}
	return nil
}
