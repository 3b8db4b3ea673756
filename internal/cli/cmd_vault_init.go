package cli

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/cofferhq/coffer/internal/server/ceremony"
)

func (a *app) vaultInitCommand() *cobra.Command {
	var dir string
	var validity time.Duration
	var replicas int
	cmd := &cobra.Command{
		Use:   "init --dir DIR",
		Short: "Key ceremony: make a new fleet's secrets, root key and signed bundle",
		Long: `Init is the fleet's key ceremony. In DIR (made 0700 if needed) it writes:

  secrets.json  the fleet secrets (HPKE key, OPAQUE keys, record-id key):
                copy to every replica, keep nowhere else
  root.key      the fleet root private key, which signs fleet bundles:
                MOVE IT OFFLINE (a USB stick in a safe) and delete it here
  root.pub      the root public key clients pin (COFFER_FLEET_ROOT)
  bundle.json   the signed fleet bundle clients load (COFFER_FLEET)
  fleet-ca.crt  the fleet CA certificate (replicas' mutual TLS): give it to
                every replica, operator and relay
  fleet-ca.key  the fleet CA private key, which issues replica certificates
                ('coffer vault cert'): MOVE IT OFFLINE with root.key

With --replicas N it makes a threshold fleet (PROTOCOL.md §7): the secrets
hold no OPRF seed, and oprf-shares/share-1.json … share-N.json are the
replicas' OPRF shares, one per replica ('vault serve --oprf-share FILE'),
of which any majority together evaluate the OPRF and fewer learn nothing
about any password. Copy each to its replica only and delete them here.

It refuses to overwrite any of them.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir, _ = a.setting(cmd, "dir", "COFFER_VAULT_DIR")
			if dir == "" {
				return usagef("vault init: name the fleet directory with --dir DIR (or COFFER_VAULT_DIR)")
			}
			var c *ceremony.Ceremony
			var err error
			if replicas > 0 {
				c, err = ceremony.InitThreshold(dir, validity, replicas)
			} else {
				c, err = ceremony.Init(dir, validity)
			}
			if err != nil {
				return fail("vault init", err)
			}
			abs := func(name string) string {
				p, err := filepath.Abs(filepath.Join(dir, name))
				if err != nil {
					return filepath.Join(dir, name)
				}
				return p
			}
			if a.json {
				return a.printJSON(map[string]any{
					"dir":         dir,
					"fleet_id":    fmt.Sprintf("%x", c.Bundle.FleetID),
					"secrets":     abs(ceremony.SecretsFile),
					"root_key":    abs(ceremony.RootKeyFile),
					"root_pub":    abs(ceremony.RootPubFile),
					"root_public": c.RootPublic,
					"bundle":      abs(ceremony.BundleFile),
					"ca_cert":     abs(ceremony.CACertFile),
					"ca_key":      abs(ceremony.CAKeyFile),
					"not_after":   c.Bundle.NotAfter,
					"oprf_shares": c.Shares,
				})
			}
			if a.quiet {
				fmt.Fprintf(a.Stderr, "coffer: warning: move the fleet root key %s and the CA key %s offline now, and delete them here\n", abs(ceremony.RootKeyFile), abs(ceremony.CAKeyFile))
			}
			w := a.out()
			fmt.Fprintf(w, "Made fleet %x in %s.\n\n", c.Bundle.FleetID, dir)
			fmt.Fprintf(w, "  fleet secrets   %s\n                  copy to every replica's --dir; keep nowhere else\n", abs(ceremony.SecretsFile))
			fmt.Fprintf(w, "  root key        %s\n                  MOVE IT OFFLINE now, and delete it here: it signs fleet bundles\n", abs(ceremony.RootKeyFile))
			fmt.Fprintf(w, "  root public key %s\n                  clients pin it: COFFER_FLEET_ROOT=%s\n", abs(ceremony.RootPubFile), c.RootPublic)
			fmt.Fprintf(w, "  fleet bundle    %s\n                  clients load it: COFFER_FLEET=<that file>; valid until %s\n\n", abs(ceremony.BundleFile), c.Bundle.NotAfter.Format(time.DateOnly))
			fmt.Fprintf(w, "  fleet CA        %s\n                  issues replica certificates: 'coffer vault cert'; then MOVE %s OFFLINE too\n\n", abs(ceremony.CACertFile), abs(ceremony.CAKeyFile))
			for i, p := range c.Shares {
				fmt.Fprintf(w, "  OPRF share %d    %s\n                  to replica %d only ('vault serve --oprf-share'); delete it here\n", i+1, p, i+1)
			}
			if len(c.Shares) > 0 {
				fmt.Fprintln(w)
			}
			fmt.Fprintf(w, "Start a replica with: coffer vault serve --dir %s --id r1 --listen 127.0.0.1:7100 --raft 127.0.0.1:7101 --bootstrap\n", dir)
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "the fleet directory (env COFFER_VAULT_DIR)")
	cmd.Flags().IntVar(&replicas, "replicas", 0, "make a threshold fleet of this many replicas: OPRF shares instead of an OPRF seed (PROTOCOL.md §7)")
	cmd.Flags().DurationVar(&validity, "validity", ceremony.DefaultBundleValidity, "how long the first fleet bundle is valid")
	return cmd
}
