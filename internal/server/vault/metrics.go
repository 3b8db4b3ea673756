package vault

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/cofferhq/coffer/internal/server/replica"
)

// Metrics are a vault server's Prometheus metrics, in a registry of its own.
type Metrics struct {
	dc            string
	reg           *prometheus.Registry
	requests      *prometheus.CounterVec
	latency       *prometheus.HistogramVec
	forwards      *prometheus.CounterVec
	guesses       prometheus.Counter
	recoveries    prometheus.Counter
	destroyed     prometheus.Counter
	registrations prometheus.Counter
	lockouts      prometheus.Counter
	wrong         prometheus.Counter
	tokenRefusals prometheus.Counter
}

func newMetrics(dataCentre string) *Metrics {
	reg := prometheus.NewRegistry()
	var r prometheus.Registerer = reg
	if dataCentre != "" {
		r = prometheus.WrapRegistererWith(prometheus.Labels{"data_centre": dataCentre}, reg)
	}
	m := &Metrics{
		dc:  dataCentre,
		reg: reg,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coffer_vault_requests_total", Help: "Requests by operation and outcome.",
		}, []string{"op", "outcome"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "coffer_vault_request_seconds", Help: "Request latency by operation, including the Raft commit.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}, []string{"op"}),
		forwards: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coffer_vault_forwarded_total", Help: "Requests this follower forwarded to the leader, by result (ok, error).",
		}, []string{"result"}),
		guesses:       prometheus.NewCounter(prometheus.CounterOpts{Name: "coffer_vault_guesses_total", Help: "Password guesses counted (KE2 responses released)."}),
		recoveries:    prometheus.NewCounter(prometheus.CounterOpts{Name: "coffer_vault_recoveries_total", Help: "Successful logins (wrapped keys released)."}),
		destroyed:     prometheus.NewCounter(prometheus.CounterOpts{Name: "coffer_vault_destroyed_total", Help: "Records erased after the guess limit, and attempts answered 'destroyed'."}),
		lockouts:      prometheus.NewCounter(prometheus.CounterOpts{Name: "coffer_vault_lockouts_total", Help: "Records erased by this leader because a guess used up their budget."}),
		wrong:         prometheus.NewCounter(prometheus.CounterOpts{Name: "coffer_vault_wrong_passwords_total", Help: "Login finishes refused as a wrong password."}),
		registrations: prometheus.NewCounter(prometheus.CounterOpts{Name: "coffer_vault_registrations_total", Help: "Records registered or replaced."}),
		tokenRefusals: prometheus.NewCounter(prometheus.CounterOpts{Name: "coffer_vault_token_refusals_total", Help: "Sealed requests refused because their vault token was missing, invalid, expired or for another account."}),
	}
	r.MustRegister(m.requests, m.latency, m.forwards, m.guesses, m.recoveries, m.destroyed, m.registrations, m.lockouts, m.wrong, m.tokenRefusals)
	reg.MustRegister(prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return m
}

// Handler serves the metrics, with the replica's Raft state read at scrape
// time.
func (m *Metrics) Handler(r *replica.Replica) http.Handler {
	reg := prometheus.NewRegistry()
	var rr prometheus.Registerer = reg
	if m.dc != "" {
		rr = prometheus.WrapRegistererWith(prometheus.Labels{"data_centre": m.dc}, reg)
	}
	rr.MustRegister(raftCollector{r})
	return promhttp.HandlerFor(prometheus.Gatherers{m.reg, reg}, promhttp.HandlerOpts{})
}

type raftCollector struct{ r *replica.Replica }

var (
	descLeader  = prometheus.NewDesc("coffer_vault_raft_leader", "1 if this replica is the Raft leader.", nil, nil)
	descTerm    = prometheus.NewDesc("coffer_vault_raft_term", "Current Raft term.", nil, nil)
	descCommit  = prometheus.NewDesc("coffer_vault_raft_commit_index", "Raft commit index.", nil, nil)
	descApplied = prometheus.NewDesc("coffer_vault_raft_applied_index", "Index applied to the state machine.", nil, nil)
	descLag     = prometheus.NewDesc("coffer_vault_raft_apply_lag", "Committed entries not yet applied.", nil, nil)
	descState   = prometheus.NewDesc("coffer_vault_raft_state", "1 for this replica's Raft state (Leader, Follower, Candidate, Shutdown).", []string{"state"}, nil)
	descContact = prometheus.NewDesc("coffer_vault_raft_last_contact_seconds", "Seconds since a follower last heard from the leader (0 on the leader).", nil, nil)
	descHasLead = prometheus.NewDesc("coffer_vault_raft_has_leader", "1 if this replica knows a leader.", nil, nil)
	descSnap    = prometheus.NewDesc("coffer_vault_raft_last_snapshot_index", "Index of the newest Raft snapshot this replica took or installed (0: none).", nil, nil)
	descRestore = prometheus.NewDesc("coffer_vault_raft_snapshot_restores_total",
		"Snapshots restored into the state machine since the process started: installed from the leader (InstallSnapshot), or its own at start when its state database was behind it.", nil, nil)
)

func (c raftCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descLeader
	ch <- descTerm
	ch <- descCommit
	ch <- descApplied
	ch <- descLag
	ch <- descState
	ch <- descContact
	ch <- descHasLead
	ch <- descSnap
	ch <- descRestore
}

func (c raftCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.r.Stats()
	leader := 0.0
	if c.r.IsLeader() {
		leader = 1
	}
	ch <- prometheus.MustNewConstMetric(descLeader, prometheus.GaugeValue, leader)
	ch <- prometheus.MustNewConstMetric(descTerm, prometheus.GaugeValue, float64(st.Term))
	ch <- prometheus.MustNewConstMetric(descCommit, prometheus.GaugeValue, float64(st.CommitIndex))
	ch <- prometheus.MustNewConstMetric(descApplied, prometheus.GaugeValue, float64(st.AppliedIndex))
	lag := 0.0
	if st.CommitIndex > st.AppliedIndex {
		lag = float64(st.CommitIndex - st.AppliedIndex)
	}
	ch <- prometheus.MustNewConstMetric(descLag, prometheus.GaugeValue, lag)
	for _, s := range []string{"Leader", "Follower", "Candidate", "Shutdown"} {
		v := 0.0
		if st.State == s {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(descState, prometheus.GaugeValue, v, s)
	}
	contact := 0.0
	if !st.LastContact.IsZero() && st.State != "Leader" {
		contact = time.Since(st.LastContact).Seconds()
	}
	ch <- prometheus.MustNewConstMetric(descContact, prometheus.GaugeValue, contact)
	has := 0.0
	if st.LeaderID != "" {
		has = 1
	}
	ch <- prometheus.MustNewConstMetric(descHasLead, prometheus.GaugeValue, has)
	ch <- prometheus.MustNewConstMetric(descSnap, prometheus.GaugeValue, float64(st.LastSnapshotIndex))
	ch <- prometheus.MustNewConstMetric(descRestore, prometheus.CounterValue, float64(st.Restores))
}

// MetricsHandler serves the server's metrics (Metrics.Handler with its
// replica), for a port of their own: package serve serves it on
// metrics_listen, apart from the VaultService port clients reach.
func (s *Server) MetricsHandler() http.Handler { return s.metrics.Handler(s.cfg.Replica) }
