// Package proxy is Sluice's HTTP front end: CONNECT tunnels, absolute-URI
// (plain HTTP) requests, WebSocket upgrades, proxy authentication and the
// block page. Every request becomes a filter.Request that the Policy decides
// before anything is dialed; allowed traffic leaves through the Dial hook
// (tunnels, upgrades) or the route's Transport (plain requests, see
// plain.go).
package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluiceproxy/sluice/filter"
	"github.com/sluiceproxy/sluice/proxy/accesslog"
	"github.com/sluiceproxy/sluice/proxy/dial"
	"github.com/sluiceproxy/sluice/proxy/observe"
	"github.com/sluiceproxy/sluice/proxy/reqid"
	"github.com/sluiceproxy/sluice/proxy/sniff/sniffpolicy"
)

// Defaults for the zero values of Server's fields.
const (
	// DefaultHandshakeTimeout bounds the origin's answer to a WebSocket upgrade.
	DefaultHandshakeTimeout = 30 * time.Second
	// DefaultIdleTimeout closes tunnels and keep-alive connections that are idle.
	DefaultIdleTimeout = 5 * time.Minute
	// DefaultDialTimeout bounds one dial through the Dial hook.
	DefaultDialTimeout = 10 * time.Second
	// DefaultName is the proxy's name on the block page.
	DefaultName = "sluice"
)

// Policy decides every request. Decide must not block.
type Policy interface {
	Decide(filter.Request) filter.Decision
}

// Authenticator checks proxy credentials.
type Authenticator interface {
	// Authenticate reports whether password is user's and, when it is,
	// the user's directory groups (Sluice group names; nil for users
	// without any).
	Authenticate(client netip.Addr, user, password string) (groups []string, ok bool)
}

// Server is the HTTP front end, an http.Handler. Its zero value is usable
// and blocks every request. Fields must not change once the Server serves.
//
// The http.Server that runs it owns the connections: its ReadHeaderTimeout
// bounds a client's request headers, and its BaseContext is the context of
// every request, tunnel and upgrade, so cancelling it ends them all.
// Hijacked connections (tunnels) are not tracked by the http.Server; the
// caller tracks them at its listener (as proxy/server does).
type Server struct {
	// Policy decides every request. If nil, every request is blocked.
	Policy Policy
	// Guard decides, at dial time, each address a direct dial to an allowed
	// destination is about to connect to: req and d are the request and its
	// allowing decision, which Guard must not modify. A non-nil error
	// (wrapping dial.ErrLoop or dial.ErrBlocked) refuses the address, and
	// the returned decision is what the access line and the 403 report; it
	// returns nil, nil for an address that may be dialed. It reaches the
	// dialer in the dial's context (dial.WithCheck). If nil, addresses are
	// not checked. (Pointers, not values: it runs deep in the connection's
	// goroutine, whose stack must not grow for it.)
	Guard func(req *filter.Request, d *filter.Decision, addr netip.AddrPort) (*filter.Decision, error)
	// Dial opens connections for tunnels and upgrades, and for plain
	// requests when Transport gives no transport; route is Decision.Via.
	// If nil, a net.Dialer is used and route is ignored. The ctx passed to
	// it carries the DialTimeout deadline.
	Dial func(ctx context.Context, route, network, addr string) (net.Conn, error)
	// Transport returns the round tripper for plain requests on route. If
	// nil, or if it returns nil, a per-route *http.Transport built on Dial is
	// used (pooled connections never cross routes).
	Transport func(route string) http.RoundTripper
	// Auth checks Proxy-Authorization: Basic credentials. If nil, no
	// authentication is required.
	Auth Authenticator
	// Anonymize reports whether requests on route lose the client's Via,
	// X-Forwarded-For, Forwarded, X-Real-IP, From and Proxy-* headers. If
	// nil, no route is anonymized. Sluice never adds such headers itself.
	Anonymize func(route string) bool
	// Access gets the access record of every request and tunnel. If nil,
	// the records go to Logger as JSON "access" lines.
	Access func(*accesslog.Record)
	// Logger gets the access lines when Access is nil, and the front end's
	// own errors. If nil, nothing is logged.
	Logger *slog.Logger
	// Observe gets each request and tunnel once, when its access line is
	// written (for metrics; see observe.go). It must not block. If nil,
	// nothing is reported.
	Observe func(observe.Access)
	// Local serves origin-form requests to the proxy itself (GET
	// /proxy.pac, ...) when it is not nil: it is asked first, and the 400
	// "not a proxy request" is the answer only when it returns false.
	// Their access line has the verdict "none" and the reason "local".
	Local func(w http.ResponseWriter, r *http.Request) bool
	// Name is the proxy's name on the block page. Empty means "sluice".
	Name string
	// BlockPage configures the block page. The zero value is the built-in
	// page without a contact line.
	BlockPage BlockPage
	// HandshakeTimeout bounds the origin's answer to a WebSocket upgrade.
	// Zero means 30s.
	HandshakeTimeout time.Duration
	// IdleTimeout closes tunnels, upgraded connections and keep-alive
	// connections with no traffic for this long. Zero means 5m.
	IdleTimeout time.Duration
	// DialTimeout bounds each dial through Dial. Zero means 10s.
	DialTimeout time.Duration
	// Now returns the time of a request for filter.Request.Time. If nil,
	// time.Now is used.
	Now func() time.Time
	// Sniff says which CONNECT tunnels are answered 200 before dialing so
	// that their first bytes (TLS SNI, HTTP Host) are decided again. The
	// zero value sniffs nothing.
	Sniff sniffpolicy.Config

	mu         sync.Mutex
	transports map[string]*http.Transport // the default per-route transports
}

// CloseIdleConnections closes the idle pooled connections of the default
// per-route transports, leaving requests and tunnels in flight alone (for
// a Server that is being replaced on reload).
func (s *Server) CloseIdleConnections() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, tr := range s.transports {
		tr.CloseIdleConnections()
	}
}

// ServeHTTP serves one proxy request: CONNECT, an absolute-URI request or
// a WebSocket upgrade. Any other request (to the proxy itself) gets 400.
// It works with any http.Server; tunnels end when the request's context
// is cancelled. A response whose body cannot be relayed whole (the origin
// cut it short) is aborted with panic(http.ErrAbortHandler), which the
// http.Server turns into a closed connection without a final chunk, so
// that the client sees the truncation.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := s.detach(r)
	x := &exchange{
		s:      s,
		id:     reqid.New(),
		start:  time.Now(),
		method: r.Method,
		client: clientAddr(r.RemoteAddr),
		remote: r.RemoteAddr,
		status: 0,
		cancel: cancel,
	}
	cw := &countingWriter{ResponseWriter: w}
	defer func() {
		p := recover()
		if x.tunnel { // the tunnel ends the exchange (handOff)
			if p != nil {
				s.logger().Error("panic after handing a tunnel off", "client", x.remote, "target", x.target, "panic", fmt.Sprint(p))
			}
			return
		}
		if p != nil {
			if p == http.ErrAbortHandler {
				if x.err == nil {
					x.err = errors.New("proxy: request aborted")
				}
			} else {
				x.err = fmt.Errorf("proxy: panic: %v", p)
				s.logger().Error("panic serving request", "client", x.remote, "method", x.method, "target", x.target, "panic", fmt.Sprint(p))
				if !cw.wroteHeader && !x.hijacked {
					textError(cw, http.StatusInternalServerError, "sluice: internal error")
				}
			}
		}
		if x.status == 0 {
			x.status = cw.status
		}
		if x.down == 0 {
			x.down = cw.n
		}
		x.ctype = cw.ctype
		x.end()
		if p == http.ErrAbortHandler {
			panic(p) // the server closes the connection mid-response
		}
	}()
	switch {
	case r.Method == http.MethodConnect:
		s.serveConnect(x, cw, r.WithContext(ctx))
	case r.URL.IsAbs():
		s.servePlain(ctx, x, cw, r) // one copy of r, made there, carries ctx
	case s.Local != nil && s.Local(cw, r.WithContext(ctx)):
		x.reason, x.target, x.scheme, x.path = "local", r.Host, "http", r.URL.EscapedPath()
	default:
		x.reason = "not a proxy request"
		textError(cw, http.StatusBadRequest, "sluice: this is a proxy; send absolute-URI or CONNECT requests")
	}
}

// exchange is what one request or tunnel knows for its access log line.
type exchange struct {
	s        *Server
	id       string // the request id, on the access line and the block page
	start    time.Time
	at       time.Time // the request's time as the policy saw it
	method   string
	client   netip.Addr
	remote   string
	user     string
	groups   []string // the user's directory groups, from Auth
	target   string
	decided  bool
	req      filter.Request // what the first decision was asked
	d        filter.Decision
	sniffed  []slog.Attr                     // what sniffing found, for the log
	refused  atomic.Pointer[filter.Decision] // set when Guard refused an address
	peer     atomic.Pointer[netip.Addr]      // the last address Guard let a direct dial connect to
	route    atomic.Pointer[string]          // the failover member that carried the last dial ("pool/member")
	scheme   string                          // a plain request's URL scheme
	path     string                          // a plain request's URL path
	ctype    string                          // the response's Content-Type
	reason   string                          // when refused before a decision
	status   int
	up, down int64
	hijacked bool
	tunnel   bool // handed to relay.Start, whose end calls end
	err      error
	dialErr  error  // the dial (or round trip) that failed, for Observe
	cancel   func() // ends the request's context (detach)
}

// end writes x's access line, reports it and ends the request's context:
// when its handler returns, or when its tunnel ends.
func (x *exchange) end() {
	x.log()
	x.observe()
	x.cancel()
}

// record returns x's access record.
func (x *exchange) record() *accesslog.Record {
	r := &accesslog.Record{
		ID: x.id, Start: x.start, Duration: time.Since(x.start),
		Client: x.remote, Proto: "http", Method: x.method, Target: x.target,
		Scheme: x.scheme, Path: x.path, User: x.user, Reason: x.reason,
		Status: x.status, Reply: -1, Up: x.up, Down: x.down,
		ContentType: x.ctype, Err: x.err,
	}
	if p := x.peer.Load(); p != nil {
		r.Peer = *p
	}
	// A dial error says it all; net/http wraps it in "proxyconnect tcp: ".
	var de *dial.Error
	if errors.As(r.Err, &de) {
		r.Err = de
	}
	if x.decided {
		d := x.d
		if rd := x.refused.Load(); rd != nil {
			d = *rd
		}
		r.Decided = true
		r.Verdict, r.Reason, r.Rule = d.Verdict.String(), d.Reason, d.RuleName()
		r.Category, r.Route = d.Category, d.Route()
		if rt := x.route.Load(); rt != nil && r.Route != "" {
			r.Route = *rt
		}
		r.Sniffed = x.sniffed
		r.SafeSearch = d.Enforce
		if d.WouldBlock {
			r.WouldBlock, r.WouldBlockRule = true, d.Report.String()
		}
	}
	return r
}

// log writes x's access line (see logRecord).
func (x *exchange) log() {
	if x.s.Access != nil || x.s.Logger != nil {
		x.s.logRecord(x.record())
	}
}

// logRecord writes an access line through Access, or as JSON to Logger.
func (s *Server) logRecord(r *accesslog.Record) {
	switch {
	case s.Access != nil:
		s.Access(r)
	case s.Logger != nil:
		accesslog.LogJSON(s.Logger, r)
	}
}

// decide asks the policy about host:port. A nil Policy blocks.
func (s *Server) decide(x *exchange, host string, port uint16) filter.Decision {
	req := filter.Request{Client: x.client, User: x.user, Groups: x.groups, Host: host, Port: port, Time: s.now()}
	x.at = req.Time
	var d filter.Decision
	if s.Policy == nil {
		d = filter.Decision{Verdict: filter.Block, Reason: "no policy configured", Default: true}
	} else {
		d = s.Policy.Decide(req)
	}
	x.decided, x.req, x.d = true, req, d
	return d
}

// guarded returns ctx carrying the route note (the failover member that
// carries a dial, for the access line), the client's dial.Identity (for circuit
// isolation) and the dial-time check of x's allowed request:
// each address the direct dialer is about to connect to goes to Guard, and
// the first refusal is kept for the answer and the access line.
func (s *Server) guarded(ctx context.Context, x *exchange) context.Context {
	ctx = dial.WithIdentity(ctx, dial.Identity{Client: x.req.Client, User: x.req.User})
	ctx = dial.WithRouteNote(ctx, func(route string) { x.route.Store(&route) })
	if s.Guard == nil {
		return ctx
	}
	// The check keeps its own copy of the request and decision (one
	// allocation for both): x's may be decided again later (sniffing).
	g := &struct {
		req filter.Request
		d   filter.Decision
	}{x.req, x.d}
	return dial.WithCheck(ctx, func(ap netip.AddrPort) error {
		rd, err := s.Guard(&g.req, &g.d, ap)
		if err != nil {
			x.refused.CompareAndSwap(nil, filter.OrBlock(rd))
		} else {
			a := ap.Addr().Unmap()
			x.peer.Store(&a)
		}
		return err
	})
}

// dial opens a connection on route through the Dial hook, bounded by
// DialTimeout.
func (s *Server) dial(ctx context.Context, route, network, addr string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, s.dialTimeout())
	defer cancel()
	if s.Dial != nil {
		return s.Dial(ctx, route, network, addr)
	}
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}

// baseKey marks the context an http.Server gives its connections (see
// WithBase).
type baseKey struct{}

// WithBase returns base carrying itself as the connections' lifetime, for
// an http.Server's BaseContext: requests are detached from the client's
// FIN (see detach) but still end when base is cancelled, as the server
// does when its shutdown grace period is over.
func WithBase(base context.Context) context.Context {
	return context.WithValue(base, baseKey{}, base)
}

// detach returns the context a request is served with. net/http cancels
// r.Context() as soon as the client's FIN arrives, but a client that
// half-closes after sending its request still reads the answer (nc -q,
// scripted clients; SOCKS serves them too): the dial and the round trip
// must not end then. The context keeps r's values and ends when the
// handler returns or when the server's base context (WithBase) ends. A
// client that really went away cannot be told from a half-closed one
// until Sluice writes to it: the write fails and the response is aborted.
//
// A request whose context ends only with the base (one served on the
// accepting worker, whose context is WithBase's) needs no detaching: a
// child of it is all that is asked, without a watch on the base.
func (s *Server) detach(r *http.Request) (context.Context, context.CancelFunc) {
	base, ok := r.Context().Value(baseKey{}).(context.Context)
	if ok && r.Context().Done() == base.Done() {
		return context.WithCancel(r.Context())
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
	if !ok {
		return ctx, cancel
	}
	stop := context.AfterFunc(base, cancel)
	return ctx, func() { stop(); cancel() }
}

func (s *Server) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Server) name() string {
	if s.Name == "" {
		return DefaultName
	}
	return s.Name
}

func (s *Server) handshakeTimeout() time.Duration {
	return orDefault(s.HandshakeTimeout, DefaultHandshakeTimeout)
}

func (s *Server) idleTimeout() time.Duration { return orDefault(s.IdleTimeout, DefaultIdleTimeout) }

func (s *Server) dialTimeout() time.Duration { return orDefault(s.DialTimeout, DefaultDialTimeout) }

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

func (s *Server) anonymize(route string) bool { return s.Anonymize != nil && s.Anonymize(route) }

var discardLogger = slog.New(slog.DiscardHandler)

func (s *Server) logger() *slog.Logger {
	if s.Logger == nil {
		return discardLogger
	}
	return s.Logger
}

func clientAddr(remote string) netip.Addr {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// countingWriter counts response body bytes and remembers the status and
// the first write error. It passes Flush, Hijack and Unwrap through.
type countingWriter struct {
	http.ResponseWriter
	n           int64
	status      int
	wroteHeader bool
	ctype       string // the Content-Type answered
	flushEach   bool   // flush after every write: relay bytes as they come
	err         error  // the first write or flush error: the client is gone
}

func (w *countingWriter) WriteHeader(code int) {
	if !w.wroteHeader && (code >= 200 || code == http.StatusSwitchingProtocols) {
		w.status, w.wroteHeader = code, true
		w.ctype = w.Header().Get("Content-Type")
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *countingWriter) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.status, w.wroteHeader = http.StatusOK, true
		w.ctype = w.Header().Get("Content-Type")
	}
	n, err := w.ResponseWriter.Write(p)
	w.n += int64(n)
	if w.flushEach && err == nil {
		err = http.NewResponseController(w.ResponseWriter).Flush()
	}
	if err != nil && w.err == nil {
		w.err = err
	}
	return n, err
}

// flushErr flushes and remembers a failure in err.
func (w *countingWriter) flushErr() {
	if !w.wroteHeader {
		w.status, w.wroteHeader = http.StatusOK, true
	}
	if err := http.NewResponseController(w.ResponseWriter).Flush(); err != nil && w.err == nil {
		w.err = err
	}
}

// Flush implements http.Flusher.
func (w *countingWriter) Flush() {
	if !w.wroteHeader {
		w.status, w.wroteHeader = http.StatusOK, true
	}
	http.NewResponseController(w.ResponseWriter).Flush()
}

// Hijack implements http.Hijacker.
func (w *countingWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return http.NewResponseController(w.ResponseWriter).Hijack()
}

// Unwrap lets http.ResponseController reach the server's writer.
func (w *countingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
