package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cofferhq/coffer/internal/server/fleetca"
	"github.com/cofferhq/coffer/internal/server/vault"
)

// A replica's admin endpoint, for 'coffer vault join|remove|status'.

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
