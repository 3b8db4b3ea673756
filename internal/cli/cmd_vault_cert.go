package cli

import (
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/cofferhq/coffer/internal/server/fleetca"
)

func (a *app) vaultCertCommand() *cobra.Command {
	var dir, id, hosts, out, roleName string
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
			dir, _ = a.setting(cmd, "dir", "COFFER_VAULT_DIR")
			role, err := fleetca.ParseRole(roleName)
			if err != nil {
				return usagef("vault cert: --role: %v", err)
			}
			if dir == "" || id == "" || out == "" || (hosts == "" && role == fleetca.RoleReplica) {
				return usagef("vault cert: give --dir FLEETDIR, --id ID, --out DIR and, for a replica, --host HOST[,HOST...]")
			}
			ca, err := fleetca.Load(dir)
			if err != nil {
				return fail("vault cert", err)
			}
			if err := ca.IssueRoleFiles(role, out, id, splitList(hosts), validity); err != nil {
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
	f.StringVar(&id, "id", "", "the replica's id (or the operator's or relay's name)")
	f.StringVar(&roleName, "role", "replica", "certificate role: replica (Raft peer and admin), operator (admin endpoint only), relay (the VaultService only: what 'relay serve --vault-cert' presents)")
	f.StringVar(&hosts, "host", "", "IP addresses and DNS names the replica is reached at, comma-separated")
	f.StringVar(&out, "out", "", "directory for replica.crt, replica.key and fleet-ca.crt")
	f.DurationVar(&validity, "validity", fleetca.CertValidity, "how long the certificate is valid")
	return cmd
}
