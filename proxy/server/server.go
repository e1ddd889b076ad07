// Package server is Sluice's composition root. It loads the configuration,
// compiles the engine, builds the shared dialer, opens the listeners (each
// one serves HTTP, SOCKS5 and SOCKS4a on the same port), reloads everything
// atomically when the rules change, and shuts down by draining.
//
// Lifecycle of a configuration: rules.Load parses and validates it (and
// reads the block page template), filter.Compile builds the indexes,
// proxy.CheckBlockTemplate tries the template, dial.NewRouter builds the
// routes and auth.Load reads the users; only when every step succeeds is the new state
// swapped in with one atomic store. A connection in flight keeps the state
// it started with; a failed reload keeps the old state serving.
//
// Lifecycle of a connection (lifecycle.go, conns.go): every accepted
// connection is tracked until it closes, whichever front end serves it;
// `clients` and `limits` are checked at accept; the first byte chooses
// SOCKS or HTTP. Run is the only serving path: the HTTP front end is an
// http.Handler run by this package's http.Servers, the SOCKS one is given
// connections with ServeConn and ended with Close; shutdown (see Run)
// drains the tracked connections. Connections accepted by a transparent
// listener (`transparent: listen`) skip the first-byte choice: they go to
// the transparent front end with their original destination.
package server

import (
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluiceproxy/sluice/filter"
	"github.com/sluiceproxy/sluice/proxy"
	"github.com/sluiceproxy/sluice/proxy/accesslog"
	"github.com/sluiceproxy/sluice/proxy/auth"
	"github.com/sluiceproxy/sluice/proxy/dial"
	"github.com/sluiceproxy/sluice/proxy/observe"
	"github.com/sluiceproxy/sluice/proxy/relay"
	"github.com/sluiceproxy/sluice/proxy/sniff/sniffpolicy"
	"github.com/sluiceproxy/sluice/proxy/transparent"
	"github.com/sluiceproxy/sluice/rules"
	"github.com/sluiceproxy/sluice/socks"
)

// Options configures a Server. The zero Options serves the embedded default
// config on 127.0.0.1:3128.
type Options struct {
	// Config is the path of the YAML config. Empty means the embedded default.
	Config string
	// Listen overrides the config's listen addresses when not empty.
	Listen []string
	// AllowOpen permits a non-loopback listener with neither `clients` nor
	// `users` restricting access. Default false: such a config is refused.
	AllowOpen bool
	// Logger receives every log line. Nil means slog.Default().
	Logger *slog.Logger
	// NoSignals keeps Run from reloading on SIGHUP, for a process that
	// runs several servers (tests). Default false: SIGHUP reloads.
	NoSignals bool
	// Version is shown on the admin status page and in sluice_build_info.
	// Empty means "dev".
	Version string
}

// Server runs Sluice. Create it with New, then call Run.
type Server struct {
	opts Options
	log  *slog.Logger
	alog *accesslog.Log // the access log, reconfigured on reload

	state     atomic.Pointer[state]
	reloadMu  sync.Mutex // serializes reloads
	reloads   atomic.Int64
	failures  atomic.Int64
	lastError atomic.Pointer[string]
	validate  bool                              // Validate's server: reads, never downloads or writes
	own       atomic.Pointer[[]netip.AddrPort]  // the listeners' addresses, once Run listens
	m         *metrics                          // /metrics and the status page; nil in Validate
	exc       atomic.Pointer[filter.Exceptions] // the temporary exceptions (`sluice allow`), before every rule
	excFile   exceptionsFile                    // what refreshExceptions last read; its goroutine's only

	conns    *conns          // every accepted connection, until it closes
	handlers inflight        // HTTP handlers and tunnels running (holdTunnel)
	base     context.Context // of every connection; cancelled when the grace period ends
	httpBase context.Context // base as the HTTP servers give it (see connectBase)
	baseOnce sync.Once
	stop     context.CancelFunc
	wg       sync.WaitGroup // accept loops, connections, reload triggers, HTTP servers
	workers  atomic.Int64   // connection goroutines started (see work)
	waiting  atomic.Int64   // of them, those waiting for a connection

	addr      net.Addr // the first listener's, for the HTTP servers
	mu        sync.Mutex
	gen       *generation           // the HTTP server new connections go to
	gens      []*generation         // every HTTP server that may still have connections
	socksLive map[*socks.Server]int // SOCKS connections being served, per state's server
	stopping  bool                  // shutdown began: the listeners are closed
	closed    bool                  // the grace period is over: everything is closed
}

// state is everything one configuration produced. It is never modified
// after it is stored; a reload builds a new one.
type state struct {
	cfg     *rules.Config
	set     *rules.Set // kept only by Validate; nil in a running state
	engine  *filter.Engine
	router  *dial.Router
	users   *auth.File        // nil: no htpasswd users
	dir     *auth.Directory   // nil: no directory users
	dirKey  [sha256.Size]byte // what dir was built from, to keep it across reloads
	http    *proxy.Server
	socks   *socks.Server
	transp  *transparent.Server // serves the transparent listeners
	clients []netip.Prefix
	watch   []string // files whose change triggers a reload
	loaded  time.Time
	// problems lists the sources that could not be read or had invalid
	// lines, for the status page.
	problems []sourceProblem
}

// holdTunnel counts a running tunnel until the func it returns is called.
func (s *Server) holdTunnel() func() {
	s.handlers.add()
	return s.handlers.done
}

// New loads and compiles the configuration. It fails, naming file and line,
// when the config is invalid, so that Sluice never serves without rules.
func New(opts Options) (*Server, error) {
	s := &Server{opts: opts, log: opts.Logger}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.alog = accesslog.New(s.log, os.Stderr)
	s.conns = newConns(s.log)
	s.m = newMetrics(s, time.Now)
	base, stop := context.WithCancel(context.Background())
	// A tunnel outlives the handler that started it (relay.Start): the
	// hold counts it with the HTTP handlers, so that shutdown waits for
	// its access line.
	s.base, s.stop = relay.WithHold(base, s.holdTunnel), stop
	st, err := s.first()
	if err != nil {
		return nil, err
	}
	if err := s.alog.Configure(st.cfg.AccessLog, st.cfg.LogFormat, st.cfg.AccessLogFlush); err != nil {
		return nil, fmt.Errorf("server: access_log: %w", err)
	}
	st.set = nil // the engine has what it needs; the lists' strings can go
	s.state.Store(st)
	s.refreshExceptions(time.Now())
	releaseMemory()
	return s, nil
}

// checkOpen refuses to listen beyond loopback with no access control. A
// transparent listener asks for no password, so only `clients` restricts it.
func checkOpen(cfg *rules.Config, allowOpen bool) error {
	if allowOpen || len(cfg.Clients) > 0 {
		return nil
	}
	for _, a := range cfg.Transparent.Listen {
		if !rules.IsLoopbackAddr(a) {
			return fmt.Errorf("server: refusing to listen on %s: `clients` does not restrict who may use the transparent listener "+
				"(it cannot ask for a password, so `users` does not), and open proxies are found and abused within hours; "+
				"add `clients: [YOUR/CIDR]` to the config, or pass --allow-open if you really mean it", a)
		}
	}
	if cfg.Users != "" || cfg.LDAP != nil {
		return nil
	}
	for _, a := range cfg.Listen {
		if !rules.IsLoopbackAddr(a) {
			return fmt.Errorf("server: refusing to listen on %s: neither `clients` nor `users` restricts who may use the proxy, "+
				"and open proxies are found and abused within hours; add `clients: [YOUR/CIDR]` or `users: FILE` to the config, "+
				"or pass --allow-open if you really mean it", a)
		}
	}
	return nil
}

// load reads the config the server was started with, and its lists: see
// loadSources for the rules that keep a list problem from opening the filter.
func (s *Server) load() (*rules.Set, error) {
	if s.opts.Config == "" {
		return rules.LoadSet(rules.Default())
	}
	cfg, err := rules.LoadConfig(s.opts.Config)
	if err != nil {
		return nil, err
	}
	return s.loadSources(cfg)
}

// build runs every step of a configuration's lifecycle and returns the
// resulting state, or the first error.
func (s *Server) build() (*state, error) {
	set, err := s.load()
	if err != nil {
		return nil, err
	}
	cfg := set.Config
	eng, err := filter.Compile(set)
	if err != nil {
		return nil, err
	}
	if bp := cfg.BlockPage; bp.Template != nil {
		if err := proxy.CheckBlockTemplate(bp.Template); err != nil {
			return nil, fmt.Errorf("server: block_page: template %s: %w", bp.TemplateFile, err)
		}
	}
	// validate may run as another user than the service: it must not
	// create the isolation key (serve does).
	router, _, err := buildRouter(cfg, s.m.failover, !s.validate)
	if err != nil {
		return nil, err
	}
	st := &state{cfg: cfg, set: set, engine: eng, router: router, clients: cfg.Clients, loaded: time.Now()}
	st.problems = sourceProblems(set)
	if cfg.Users != "" {
		if old := s.state.Load(); old != nil && old.users != nil && old.cfg.Users == cfg.Users {
			// Same file: re-read it in place, so that the verification cache
			// and the failure limits survive the reload.
			if err := old.users.Reload(); err != nil {
				return nil, usersError(cfg, err)
			}
			st.users = old.users
		} else {
			st.users, err = auth.Load(cfg.Users)
			if err != nil {
				return nil, usersError(cfg, err)
			}
			st.users.Logger = s.log
		}
		for _, w := range st.users.Warnings() {
			s.log.Warn("users: line skipped; the other users work", "err", w)
		}
	}
	if cfg.LDAP != nil {
		if st.dir, st.dirKey, err = s.directory(cfg, s.state.Load()); err != nil {
			return nil, err
		}
	}
	st.watch = watchList(set)
	st.http, st.socks = s.frontEnds(st)
	st.transp = s.transparentFrontEnd(st)
	return st, nil
}

// frontEnds builds the two front ends of a state. They share the state's
// engine, router and users, so one atomic swap changes all of them.
func (s *Server) frontEnds(st *state) (*proxy.Server, *socks.Server) {
	policy := policy{Engine: st.engine, exc: &s.exc, via: st.cfg.Upstream}
	g := newGuard(st, &s.own)
	dialFn := st.router.Dial
	to := st.cfg.Timeouts
	sniff := sniffpolicy.Config{Mode: st.cfg.Sniff, Unnamed: st.cfg.SniffUnnamed}
	h := &proxy.Server{
		Policy:           policy,
		Guard:            g.Check,
		Dial:             dialFn,
		Transport:        st.router.Transport,
		Anonymize:        anonymizer(st.cfg),
		Logger:           s.log,
		Access:           s.access,
		Local:            s.pacHandler(st.cfg.PAC).serveProxyPort,
		BlockPage:        s.blockPage(st.cfg),
		DialTimeout:      dialBudget(st.cfg),
		HandshakeTimeout: to.Handshake,
		IdleTimeout:      to.Idle,
		Sniff:            sniff,
	}
	so := &socks.Server{
		Policy:           policy,
		Guard:            g.Check,
		Dial:             dialFn,
		UDP:              st.cfg.Socks.UDP,
		Logger:           s.log,
		Access:           s.access,
		HandshakeTimeout: to.Handshake,
		IdleTimeout:      to.Idle,
		Sniff:            sniff,
	}
	if st.users != nil || st.dir != nil {
		h.Auth = s.m.authenticator(st.users, st.dir, observe.HTTP)
		so.Auth = s.m.authenticator(st.users, st.dir, observe.SOCKS5)
	}
	h.Observe, so.Observe = s.m.observe, s.m.observe
	return h, so
}

func anonymizer(cfg *rules.Config) func(route string) bool {
	return func(route string) bool {
		if route == "" {
			route = cfg.Upstream
		}
		if u, ok := cfg.Upstreams[route]; ok && u.Anonymize != nil {
			return *u.Anonymize
		}
		return cfg.Anonymize
	}
}

// Reload rebuilds the state from the config and its files and swaps it in.
// On any error the running state keeps serving and the error is returned.
func (s *Server) Reload() (err error) {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	start := time.Now()
	defer func() { s.m.reloaded(start, err) }()
	st, err := s.build()
	if err != nil {
		s.failures.Add(1)
		msg := err.Error()
		s.lastError.Store(&msg)
		s.log.Error("reload failed; keeping the running rules", "err", err)
		return err
	}
	old := s.state.Load()
	st.cfg.Listen = old.cfg.Listen // listeners are not reopened on reload
	st.cfg.Transparent.Listen = old.cfg.Transparent.Listen
	if err := checkOpen(st.cfg, s.opts.AllowOpen); err != nil {
		// Removing `clients` or `users` must not turn a gateway into an open proxy.
		s.failures.Add(1)
		msg := err.Error()
		s.lastError.Store(&msg)
		s.log.Error("reload failed; keeping the running rules", "err", err)
		return err
	}
	if err := s.alog.Configure(st.cfg.AccessLog, st.cfg.LogFormat, st.cfg.AccessLogFlush); err != nil {
		// The access log cannot be written where the new config says:
		// keep the running rules and the running log.
		s.failures.Add(1)
		err = fmt.Errorf("server: access_log: %w", err)
		msg := err.Error()
		s.lastError.Store(&msg)
		s.log.Error("reload failed; keeping the running rules", "err", err)
		return err
	}
	st.set = nil
	s.state.Store(st)
	s.lastError.Store(nil)
	s.reloads.Add(1)
	s.log.Info("rules reloaded", "rules", st.engine.Rules(), "dur", time.Since(start).Round(time.Millisecond))
	// Idle pooled connections of the old routes are no longer needed;
	// connections in flight keep working until they end.
	old.router.CloseIdleConnections()
	releaseMemory()
	return nil
}

// releaseMemory gives the memory of a compile (the lists' strings, the old
// engine once its last connection ends) back to the system, so that the
// proxy's resident size follows its live rules rather than its peak.
// Reloads are rare, so the cost of a forced collection does not matter.
func releaseMemory() { go debug.FreeOSMemory() }

// dialBudget bounds one whole dial of an HTTP request: every hop of the
// longest route may take the configured dial timeout, and a failover list
// may try each of its members.
func dialBudget(cfg *rules.Config) time.Duration {
	per := orDefault(cfg.Timeouts.Dial, rules.DefaultDialTimeout)
	var hops func(name string, depth int) int
	hops = func(name string, depth int) int {
		u, ok := cfg.Upstreams[name]
		if !ok || depth > len(cfg.Upstreams) {
			return 1
		}
		if len(u.Failover) == 0 {
			return len(u.Chain) + 1
		}
		n := 0
		for _, m := range u.Failover {
			n += hops(m, depth+1)
		}
		return n
	}
	most := 1
	for name := range cfg.Upstreams {
		most = max(most, hops(name, 0))
	}
	return per * time.Duration(most)
}

// Validate runs every step of loading the config at opts.Config (rules,
// lists, engine, routes, users, access checks) without listening: what
// `sluice config validate` reports is what `serve` would refuse. Unusable
// sources are not an error here: the caller reads them from
// Set.SourceErrors (remote sources are never downloaded by Validate).
func Validate(opts Options) (*rules.Set, error) {
	s := &Server{opts: opts, log: opts.Logger, validate: true}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	st, err := s.first()
	if err != nil {
		return nil, err
	}
	if err := checkAccessLog(st.cfg.AccessLog); err != nil {
		return nil, err
	}
	return st.set, nil
}

// checkAccessLog reports an access_log file whose folder does not exist
// (which serve would refuse), without creating the file: validate may run
// as another user than the service.
func checkAccessLog(path string) error {
	if path == "" || path == rules.AccessLogStderr {
		return nil
	}
	dir := filepath.Dir(path)
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return fmt.Errorf("server: access_log %s: folder %s does not exist", path, dir)
	}
	return nil
}

// first builds the state a server starts with: the config's, with the
// listen addresses of the options, refused when it would be open.
func (s *Server) first() (*state, error) {
	st, err := s.build()
	if err != nil {
		return nil, err
	}
	if len(s.opts.Listen) > 0 {
		st.cfg.Listen = s.opts.Listen
	}
	if err := checkOpen(st.cfg, s.opts.AllowOpen); err != nil {
		return nil, err
	}
	return st, nil
}

func remoteAddr(c net.Conn) netip.Addr {
	ra := c.RemoteAddr()
	if ta, ok := ra.(*net.TCPAddr); ok { // every accepted conn: no string to format and parse
		return ta.AddrPort().Addr().Unmap()
	}
	if ra == nil {
		return netip.Addr{}
	}
	if ap, err := netip.ParseAddrPort(ra.String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

func allowedClient(clients []netip.Prefix, a netip.Addr) bool {
	if len(clients) == 0 {
		return true
	}
	for _, p := range clients {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Status describes the running state for `sluice list` and logs.
type Status struct {
	Loaded     time.Time
	Rules      int
	Categories map[string]int
	Reloads    int64
	Failures   int64
	LastError  string
}

// Status returns counters of the running state.
func (s *Server) Status() Status {
	st := s.state.Load()
	out := Status{Loaded: st.loaded, Rules: st.engine.Rules(), Categories: st.engine.Categories(),
		Reloads: s.reloads.Load(), Failures: s.failures.Load()}
	if e := s.lastError.Load(); e != nil {
		out.LastError = *e
	}
	return out
}

// watchList returns the files whose change should trigger a reload.
func watchList(set *rules.Set) []string {
	var files []string
	cfg := set.Config
	if cfg.File != "" {
		files = append(files, cfg.File)
	}
	if cfg.Users != "" {
		files = append(files, cfg.Users)
	}
	if cfg.LDAP != nil && cfg.LDAP.BindPasswordFile != "" {
		files = append(files, cfg.LDAP.BindPasswordFile)
	}
	if cfg.BlockPage.TemplateFile != "" {
		files = append(files, cfg.BlockPage.TemplateFile)
	}
	for _, c := range set.Categories {
		for _, src := range c.Sources {
			if rules.IsBuiltin(src.Source.Path) {
				continue // inside the binary: it changes with it
			}
			if src.Source.Path != "" {
				files = append(files, src.Source.Path)
			} else if src.Source.URL != "" {
				files = append(files, cfg.CachePath(src.Source)) // `sluice list update` writes it
			}
		}
	}
	for _, d := range cfg.CategoryDirs {
		files = append(files, d.Path)
	}
	return files
}
