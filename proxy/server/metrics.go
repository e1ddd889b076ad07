package server

import (
	"cmp"
	"maps"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sluiceproxy/sluice/proxy/auth"
	"github.com/sluiceproxy/sluice/proxy/dial"
	"github.com/sluiceproxy/sluice/proxy/observe"
)

// metrics is what the admin listener's /metrics and status page report.
// It belongs to the Server, not to a state, so its counters survive
// reloads. Labels are few and fixed (front end, verdict, category, dial
// error kind, route): never a host, a client or a user. Its methods are
// safe on a nil *metrics (a Server made by Validate has none).
type metrics struct {
	reg *prometheus.Registry

	connsActive  *prometheus.GaugeVec                              // frontend
	connsTotal   *prometheus.CounterVec                            // frontend
	rejected     *prometheus.CounterVec                            // reason
	requests     *prometheus.CounterVec                            // frontend, verdict, category
	bytes        *prometheus.CounterVec                            // frontend, direction
	dialErrors   *prometheus.CounterVec                            // kind
	failovers    *prometheus.CounterVec                            // route
	authFailures *prometheus.CounterVec                            // frontend
	wouldBlock   *prometheus.CounterVec                            // frontend, rule
	up, down     map[string]prometheus.Counter                     // bytes per front end, resolved once
	fronts       map[string]*frontCounters                         // connections per front end, resolved once
	reqs         atomic.Pointer[map[requestKey]prometheus.Counter] // resolved label sets; replaced, never changed
	reqsMu       sync.Mutex                                        // held to replace reqs

	// For the status page.
	now          func() time.Time
	started      time.Time
	perMinute    *minuteRing
	blockedCats  *hourTop
	blockedHosts *hourTop
	lastReload   atomic.Pointer[reloadResult]
}

// reloadResult is the outcome of the last reload.
type reloadResult struct {
	At  time.Time
	Err string // "" when it succeeded
}

// frontends are the values of the frontend label.
var frontends = []string{observe.HTTP, observe.SOCKS5, observe.SOCKS4, observe.Transparent}

// topKeys is how many keys each ten-minute sketch of the status page keeps.
const topKeys = 64

func newMetrics(s *Server, now func() time.Time) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		connsActive: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "sluice_connections_active",
			Help: "Client connections open now, by front end (chosen by the first byte)."}, []string{"frontend"}),
		connsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_connections_total",
			Help: "Client connections accepted and served, by front end."}, []string{"frontend"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_connections_rejected_total",
			Help: "Client connections refused at accept: beyond limits.max_conns or limits.per_client (answered 503 or SOCKS failure), or from outside `clients` (closed)."},
			[]string{"reason"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_requests_total",
			Help: "Requests (HTTP) and connections (SOCKS) by front end, final verdict (allow, block, or none: refused before a decision) and the deciding rule's category (\"\" for none)."},
			[]string{"frontend", "verdict", "category"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_bytes_total",
			Help: "Bytes relayed, by front end and direction (up: client to origin, down: origin to client), counted when a request or tunnel ends."},
			[]string{"frontend", "direction"}),
		dialErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_dial_errors_total",
			Help: "Failed dials of allowed requests, by kind (dial.Classify)."}, []string{"kind"}),
		failovers: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_upstream_failovers_total",
			Help: "Dials on a failover route that did not go to its first member (down, or failed), by route."}, []string{"route"}),
		wouldBlock: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_would_block_total",
			Help: "Allowed requests a report-only rule (mode: report) would have blocked, by front end and rule (its name, else \"rule N\")."},
			[]string{"frontend", "rule"}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_auth_failures_total",
			Help: "Proxy credentials rejected (wrong user or password, or locked out), by front end."}, []string{"frontend"}),
		now:          now,
		started:      now(),
		perMinute:    newMinuteRing(now),
		blockedCats:  newHourTop(topKeys, now),
		blockedHosts: newHourTop(topKeys, now),
	}
	m.up, m.down = map[string]prometheus.Counter{}, map[string]prometheus.Counter{}
	m.fronts = map[string]*frontCounters{}
	for _, fe := range frontends {
		active := m.connsActive.WithLabelValues(fe)
		closed := active.Dec
		m.fronts[fe] = &frontCounters{total: m.connsTotal.WithLabelValues(fe), active: active, closed: &closed}
		m.up[fe] = m.bytes.WithLabelValues(fe, "up")
		m.down[fe] = m.bytes.WithLabelValues(fe, "down")
	}
	m.authFailures.WithLabelValues(observe.HTTP)
	m.authFailures.WithLabelValues(observe.SOCKS5)
	for _, r := range []string{"max_conns", "per_client", "clients"} {
		m.rejected.WithLabelValues(r)
	}
	version := s.opts.Version
	if version == "" {
		version = "dev"
	}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.connsActive, m.connsTotal, m.rejected, m.requests, m.bytes, m.dialErrors, m.failovers, m.authFailures, m.wouldBlock,
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "sluice_reloads_total",
			Help: "Successful reloads of the config and its files."}, func() float64 { return float64(s.reloads.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "sluice_reload_failures_total",
			Help: "Reloads that failed; the running rules were kept."}, func() float64 { return float64(s.failures.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sluice_start_time_seconds",
			Help: "When the server started, in Unix seconds."}, func() float64 { return float64(m.started.UnixMilli()) / 1e3 }),
		prometheus.NewGauge(prometheus.GaugeOpts{Name: "sluice_build_info", Help: "Always 1; the version is a label.",
			ConstLabels: prometheus.Labels{"version": version}}),
		stateCollector{s},
	)
	return m
}

// handler serves /metrics in the Prometheus text (or negotiated) format.
func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// observe counts one request or connection a front end served.
func (m *metrics) observe(a observe.Access) {
	if m == nil {
		return
	}
	m.request(a.Frontend, a.Verdict, a.Category).Inc()
	if a.WouldBlock != "" {
		m.wouldBlock.WithLabelValues(a.Frontend, a.WouldBlock).Inc()
	}
	if up, ok := m.up[a.Frontend]; ok {
		up.Add(float64(max(a.Up, 0)))
		m.down[a.Frontend].Add(float64(max(a.Down, 0)))
	}
	if a.DialErr != nil {
		m.dialErrors.WithLabelValues(kindLabel(dial.Classify(a.DialErr))).Inc()
	}
	blocked := a.Verdict == observe.Block
	m.perMinute.add(blocked)
	if blocked {
		m.blockedCats.add(a.Category)
		if a.Host != "" {
			m.blockedHosts.add(a.Host)
		}
	}
}

// frontCounters are the connection metrics of one front end.
type frontCounters struct {
	total  prometheus.Counter
	active prometheus.Gauge
	closed *func() // active.Dec, made once
}

// requestKey is the label set of sluice_requests_total.
type requestKey struct{ frontend, verdict, category string }

// maxRequestKeys bounds the label sets request keeps resolved; past it
// (many categories) it looks them up each time.
const maxRequestKeys = 1024

// request returns the sluice_requests_total counter of a label set. The
// counters of the label sets seen are kept: the vector's lookup hashes
// and checks the three values on every request.
func (m *metrics) request(frontend, verdict, category string) prometheus.Counter {
	k := requestKey{frontend, verdict, category}
	if p := m.reqs.Load(); p != nil {
		if c, ok := (*p)[k]; ok {
			return c
		}
	}
	c := m.requests.WithLabelValues(frontend, verdict, category)
	m.reqsMu.Lock()
	defer m.reqsMu.Unlock()
	old := map[requestKey]prometheus.Counter{}
	if p := m.reqs.Load(); p != nil {
		old = *p
	}
	if len(old) < maxRequestKeys {
		next := make(map[requestKey]prometheus.Counter, len(old)+1)
		maps.Copy(next, old)
		next[k] = c
		m.reqs.Store(&next)
	}
	return c
}

// kindLabel is a dial error kind as a label value: "host unreachable"
// becomes "host_unreachable".
func kindLabel(k dial.Kind) string { return strings.ReplaceAll(k.String(), " ", "_") }

// opened counts a connection whose front end is known, and returns what
// counts its end.
func (m *metrics) opened(frontend string) (closed *func()) {
	if m == nil {
		return &noop
	}
	f, ok := m.fronts[frontend]
	if !ok {
		m.connsTotal.WithLabelValues(frontend).Inc()
		g := m.connsActive.WithLabelValues(frontend)
		g.Inc()
		dec := g.Dec
		return &dec
	}
	f.total.Inc()
	f.active.Inc()
	return f.closed
}

// noop is the closed func of a nil *metrics.
var noop = func() {}

// reject counts a connection refused at accept for reason.
func (m *metrics) reject(reason string) {
	if m != nil {
		m.rejected.WithLabelValues(reason).Inc()
	}
}

// failover is the router's OnFailover hook.
func (m *metrics) failover(route string) {
	if m != nil {
		m.failovers.WithLabelValues(route).Inc()
	}
}

// reloaded records the outcome of a reload for the status page.
func (m *metrics) reloaded(at time.Time, err error) {
	if m == nil {
		return
	}
	r := &reloadResult{At: at}
	if err != nil {
		r.Err = cmp.Or(err.Error(), "failed")
	}
	m.lastReload.Store(r)
}

// countingAuth checks credentials with the users file and the directory
// and counts the ones a front end rejects. A name in the users file is
// decided by the file (checked first, its answer final); other names go
// to the directory.
type countingAuth struct {
	users *auth.File      // nil: none
	dir   *auth.Directory // nil: none
	fail  func()
}

// Authenticate checks the credentials.
func (c countingAuth) Authenticate(client netip.Addr, user, password string) (groups []string, ok bool) {
	switch {
	case c.users != nil && (c.dir == nil || c.users.Has(user)):
		ok = c.users.Authenticate(client, user, password)
	case c.dir != nil:
		groups, ok = c.dir.Authenticate(client, user, password)
	}
	if !ok {
		c.fail()
	}
	return groups, ok
}

// authenticator wraps the users file and the directory to count failures
// on frontend.
func (m *metrics) authenticator(users *auth.File, dir *auth.Directory, frontend string) countingAuth {
	fail := func() {}
	if m != nil {
		fail = m.authFailures.WithLabelValues(frontend).Inc
	}
	return countingAuth{users: users, dir: dir, fail: fail}
}

// stateCollector reports what the running state holds: entries per
// category, the health of each upstream route, the time of the last load.
type stateCollector struct{ s *Server }

var (
	descEntries = prometheus.NewDesc("sluice_category_entries",
		"Entries (domains and exceptions) of each category in the running rules.", []string{"category"}, nil)
	descUp = prometheus.NewDesc("sluice_upstream_up",
		"1 when the upstream route can be used, 0 while a hop of it is marked down after a failure (or, for a failover route, every member is).",
		[]string{"route"}, nil)
	descRules  = prometheus.NewDesc("sluice_rules", "Rules in the running config.", nil, nil)
	descLoaded = prometheus.NewDesc("sluice_rules_loaded_time_seconds",
		"When the running rules were loaded, in Unix seconds.", nil, nil)
	descLastReloadOK = prometheus.NewDesc("sluice_last_reload_successful",
		"1 when the last reload succeeded (or none was tried yet), 0 when it failed.", nil, nil)
)

// Describe implements prometheus.Collector.
func (c stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descEntries, descUp, descRules, descLoaded, descLastReloadOK} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.s.state.Load()
	if st == nil {
		return
	}
	for name, n := range st.engine.Categories() {
		ch <- prometheus.MustNewConstMetric(descEntries, prometheus.GaugeValue, float64(n), name)
	}
	for _, route := range slices.Sorted(maps.Keys(st.cfg.Upstreams)) {
		up := 0.0
		if st.router.Up(route) {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(descUp, prometheus.GaugeValue, up, route)
	}
	ch <- prometheus.MustNewConstMetric(descRules, prometheus.GaugeValue, float64(st.engine.Rules()))
	ch <- prometheus.MustNewConstMetric(descLoaded, prometheus.GaugeValue, float64(st.loaded.UnixMilli())/1e3)
	ok := 1.0
	if c.s.m != nil {
		if r := c.s.m.lastReload.Load(); r != nil && r.Err != "" {
			ok = 0
		}
	}
	ch <- prometheus.MustNewConstMetric(descLastReloadOK, prometheus.GaugeValue, ok)
}

// count counts c, whose first byte chose its front end, as open until it
// closes. A connection beyond a limit was counted as rejected instead.
func (s *Server) count(c *conn, first byte) {
	if c.refused {
		return
	}
	fe := observe.HTTP
	switch first {
	case 0x05:
		fe = observe.SOCKS5
	case 0x04:
		fe = observe.SOCKS4
	}
	c.track(s.m.opened(fe))
}
