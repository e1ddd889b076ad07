package dial

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
)

var (
	// ErrUnknownRoute means a route name that the Router does not hold.
	ErrUnknownRoute = errors.New("dial: unknown route")
	// ErrRouteConfig means a route cannot be built from its spec.
	ErrRouteConfig = errors.New("dial: bad route")
)

// RouteDirect is the name of the route that dials origins itself. It cannot be
// redefined.
const RouteDirect = "direct"

// DefaultBackoff is how long a failed hop is marked down when
// Config.Backoff is zero.
const DefaultBackoff = 30 * time.Second

// RouteSpec is one named route: either a chain of upstreams or a failover
// list of other routes, never both.
type RouteSpec struct {
	// Chain lists the upstreams in order: client -> Chain[0] -> ... ->
	// origin. Each URL's scheme is one FromURL accepts.
	Chain []*url.URL
	// Failover names other routes ("direct" allowed), tried in order;
	// routes with a hop marked down are skipped unless all are down.
	Failover []string
	// TLSCA is PEM with the CA certificates that https upstreams of this
	// chain must chain to. Nil means the system roots.
	TLSCA []byte
	// Isolate gives each identity (see Isolation) its own credentials at
	// the chain's LAST hop, the one that talks to the origin's network
	// (Tor is normally last). That hop must be socks5, socks5h, http or
	// https without user info. Plain HTTP on an isolating route goes
	// through CONNECT, never in absolute form to a parent, and its
	// connections are pooled per identity, so no request rides another
	// identity's connection.
	Isolate Isolation
}

// Config holds every route of a Router.
type Config struct {
	// Routes maps a route name to its spec. "direct" is reserved.
	Routes map[string]RouteSpec
	// Default is the route for dials that name none. "" or "direct"
	// means direct.
	Default string
	// Direct dials origins and first hops. Nil means a zero *Direct.
	Direct *Direct
	// HopTimeout bounds each hop's handshake. Zero means 10s.
	HopTimeout time.Duration
	// Backoff is how long a hop that failed is marked down. Zero means 30s.
	Backoff time.Duration
	// IsolationKey keys the isolation user names (LoadIsolationKey). It
	// is needed when any route isolates.
	IsolationKey []byte
	// OnFailover, if set, is called with a failover route's name for each
	// dial on it that did not go to its first member: that member was
	// down, or failed and the next one was tried. It must not block.
	OnFailover func(route string)
}

// Router holds every named route and is the one dialer every front end
// uses. It never falls back to direct: a route that cannot be built is an
// error from NewRouter, and a route that fails at dial time fails the dial.
// A Router is safe for concurrent use.
type Router struct {
	def     string
	direct  *Direct
	backoff time.Duration
	routes  map[string]*route
	direct0 *route // holds direct's Transport
	onFail  func(route string)
	key     []byte // isolation key

	mu   sync.Mutex
	down map[string]time.Time // hop key -> down until

	now func() time.Time // for tests; time.Now
}

// route is one compiled route.
type route struct {
	name     string
	chain    []*url.URL
	hopKeys  []string // per hop: the redacted chain up to it
	dialer   Dialer   // the chain's dialer; nil for failover and direct
	proxyHop Dialer   // dials the last hop's address, when it is http(s)
	last     *url.URL // the last hop, when it is http(s)
	tls      *tls.Config
	failover []string
	isolate  Isolation

	tmu sync.Mutex
	tr  *http.Transport
	ka  *keepAlive                   // the direct route's pool for simple requests, on tr's dialer
	itr map[Identity]*http.Transport // isolating routes: one per identity
}

// NewRouter builds every route of cfg. Unknown route names, cycles of
// failover, empty or double specs, bad URLs, unsupported schemes and bad
// TLSCA are errors.
func NewRouter(cfg Config) (*Router, error) {
	r := &Router{
		direct:  cfg.Direct,
		backoff: cfg.Backoff,
		routes:  map[string]*route{},
		down:    map[string]time.Time{},
		now:     time.Now,
		direct0: &route{name: RouteDirect},
		onFail:  cfg.OnFailover,
		key:     slices.Clone(cfg.IsolationKey),
	}
	if r.direct == nil {
		r.direct = &Direct{}
	}
	if r.backoff <= 0 {
		r.backoff = DefaultBackoff
	}
	names := slices.Sorted(maps.Keys(cfg.Routes))
	for _, name := range names {
		spec := cfg.Routes[name]
		if name == "" || name == RouteDirect {
			return nil, fmt.Errorf("%w %q: reserved name", ErrRouteConfig, name)
		}
		rt := &route{name: name}
		switch {
		case len(spec.Chain) > 0 && len(spec.Failover) > 0:
			return nil, fmt.Errorf("%w %q: both a chain and a failover list", ErrRouteConfig, name)
		case len(spec.Failover) > 0:
			if spec.Isolate != IsolateNone {
				return nil, fmt.Errorf("%w %q: isolate belongs on a chain, not a failover list", ErrRouteConfig, name)
			}
			if spec.TLSCA != nil {
				return nil, fmt.Errorf("%w %q: tls_ca belongs on a chain, not a failover list", ErrRouteConfig, name)
			}
			rt.failover = slices.Clone(spec.Failover)
		case len(spec.Chain) > 0:
			if spec.Isolate != IsolateNone && len(cfg.IsolationKey) < 16 {
				return nil, fmt.Errorf("%w %q: isolate needs an isolation key", ErrRouteConfig, name)
			}
			if err := rt.build(spec, r.direct, cfg.HopTimeout, cfg.IsolationKey); err != nil {
				return nil, err
			}
		default:
			return nil, fmt.Errorf("%w %q: no upstream", ErrRouteConfig, name)
		}
		r.routes[name] = rt
	}
	for _, name := range names {
		for _, m := range r.routes[name].failover {
			if _, ok := r.routes[m]; !ok && m != RouteDirect {
				return nil, fmt.Errorf("%w %q: failover names unknown route %q", ErrRouteConfig, name, m)
			}
		}
		if err := r.checkCycle(name, nil); err != nil {
			return nil, err
		}
	}
	r.def = cfg.Default
	if r.def == "" {
		r.def = RouteDirect
	}
	if _, ok := r.routes[r.def]; !ok && r.def != RouteDirect {
		return nil, fmt.Errorf("%w: default route %q is not defined", ErrRouteConfig, cfg.Default)
	}
	return r, nil
}

// checkCycle fails if a failover list reaches name again.
func (r *Router) checkCycle(name string, path []string) error {
	if slices.Contains(path, name) {
		return fmt.Errorf("%w %q: failover cycle %s", ErrRouteConfig, path[0], strings.Join(append(path, name), " -> "))
	}
	rt := r.routes[name]
	if rt == nil {
		return nil
	}
	for _, m := range rt.failover {
		if err := r.checkCycle(m, append(slices.Clip(path), name)); err != nil {
			return err
		}
	}
	return nil
}

// build folds a chain into its dialer.
func (rt *route) build(spec RouteSpec, direct *Direct, hopTimeout time.Duration, key []byte) error {
	opts := Options{Timeout: hopTimeout, Route: rt.name}
	if spec.TLSCA != nil {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(spec.TLSCA) {
			return fmt.Errorf("%w %q: tls_ca holds no PEM certificate", ErrRouteConfig, rt.name)
		}
		opts.TLSConfig = &tls.Config{RootCAs: pool}
	}
	rt.tls = opts.TLSConfig
	var d Dialer = direct
	var keys []string
	for i, u := range spec.Chain {
		if u == nil {
			return fmt.Errorf("%w %q: hop %d: no url", ErrRouteConfig, rt.name, i+1)
		}
		prev := d
		hopOpts := opts
		if i == len(spec.Chain)-1 {
			hopOpts.isolate = newIsolator(key, spec.Isolate)
		}
		var err error
		if d, err = FromURL(u, d, hopOpts); err != nil {
			return fmt.Errorf("%w %q: hop %d: %w", ErrRouteConfig, rt.name, i+1, err)
		}
		keys = append(keys, u.Redacted())
		rt.hopKeys = append(rt.hopKeys, strings.Join(keys, " -> "))
		if i == len(spec.Chain)-1 && spec.Isolate == IsolateNone {
			switch strings.ToLower(u.Scheme) {
			case "http", "https":
				rt.proxyHop, rt.last = prev, u
			}
		}
	}
	rt.chain = slices.Clone(spec.Chain)
	rt.dialer = d
	rt.isolate = spec.Isolate
	return nil
}

// lookup resolves "" to the default route. It returns nil for direct.
func (r *Router) lookup(name string) (rt *route, ok bool) {
	if name == "" {
		name = r.def
	}
	if name == RouteDirect {
		return nil, true
	}
	rt, ok = r.routes[name]
	return rt, ok
}

// Dial connects to addr through route: "" is the default route, "direct"
// dials directly. Failures are *Error; a hop that could not be reached or
// failed its handshake is marked down for the back-off period.
func (r *Router) Dial(ctx context.Context, route, network, addr string) (net.Conn, error) {
	rt, ok := r.lookup(route)
	if !ok {
		return nil, &Error{Kind: KindOther, Addr: addr, Upstream: route, Err: fmt.Errorf("%w %q", ErrUnknownRoute, route)}
	}
	if err := Unspecified(addr); err != nil {
		return nil, err
	}
	return r.dial(ctx, rt, network, addr)
}

// Unspecified refuses a target that is an unspecified IP literal (0.0.0.0,
// ::, ::ffff:0.0.0.0), on every route: Linux connects it to the local host,
// and an upstream would connect it to its own. The Router applies it to
// every dial; a front end that answers before dialing (a sniffed tunnel)
// asks it first. It returns a *Error of KindUnspecified, or nil.
func Unspecified(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil // the dialer reports it
	}
	if a, err := netip.ParseAddr(host); err == nil && a.Unmap().IsUnspecified() {
		return &Error{Kind: KindUnspecified, Addr: addr, Err: fmt.Errorf("%w %s", ErrUnspecified, a)}
	}
	return nil
}

func (r *Router) dial(ctx context.Context, rt *route, network, addr string) (net.Conn, error) {
	switch {
	case rt == nil:
		return r.direct.dialOrigin(ctx, network, addr, checkFrom(ctx))
	case rt.dialer != nil:
		c, err := rt.dialer.DialContext(ctx, network, addr)
		if err != nil {
			r.noteFailure(rt, err)
		}
		return c, err
	}
	// Failover: healthy members first, in order; if all are down, try
	// them all anyway.
	members := make([]*route, 0, len(rt.failover))
	for _, m := range rt.failover {
		mrt, _ := r.lookup(m)
		members = append(members, mrt)
	}
	var healthy []*route
	for _, m := range members {
		if !r.isDown(m) {
			healthy = append(healthy, m)
		}
	}
	if len(healthy) == 0 {
		healthy = members
	}
	var last error
	failedOver := false
	note := routeNoteFrom(ctx)
	for i, m := range healthy {
		if r.onFail != nil && !failedOver && (i > 0 || m != members[0]) {
			failedOver = true // once per dial: the first member is skipped or failed
			r.onFail(rt.name)
		}
		mctx, carried := ctx, RouteDirect
		if m != nil {
			carried = m.name
		}
		if note != nil {
			// A member that is a failover list names its own member.
			mctx = WithRouteNote(ctx, func(inner string) { carried = inner })
		}
		c, err := r.dial(mctx, m, network, addr)
		if err == nil {
			if note != nil {
				note(rt.name + "/" + carried)
			}
			return c, nil
		}
		last = err
		var de *Error
		if ctx.Err() != nil || !errors.As(err, &de) || !de.hopFault {
			// The target failed, or the caller gave up: another route
			// would not help, and would tell one more upstream the target.
			break
		}
	}
	var de *Error
	if errors.As(last, &de) {
		e := *de
		e.Upstream = rt.name + "/" + cmpOr(de.Upstream, RouteDirect)
		return nil, &e
	}
	return nil, last
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// noteFailure marks the failing hop of rt down when the hop is to blame.
func (r *Router) noteFailure(rt *route, err error) {
	var de *Error
	if !errors.As(err, &de) || !de.hopFault || de.Hop < 1 || de.Hop > len(rt.hopKeys) {
		return
	}
	r.mu.Lock()
	r.down[rt.hopKeys[de.Hop-1]] = r.now().Add(r.backoff)
	r.mu.Unlock()
}

// isDown reports whether any hop of rt (or, for a failover route, every
// member) is marked down. Direct is never down.
func (r *Router) isDown(rt *route) bool {
	if rt == nil {
		return false
	}
	if rt.dialer == nil {
		for _, m := range rt.failover {
			mrt, _ := r.lookup(m)
			if !r.isDown(mrt) {
				return false
			}
		}
		return true
	}
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, k := range rt.hopKeys {
		if until, ok := r.down[k]; ok {
			if now.Before(until) {
				return true
			}
			delete(r.down, k)
		}
	}
	return false
}

// Transport returns the http.RoundTripper for plain HTTP on route, one
// *http.Transport per route so that pooled connections never cross routes.
// When the route's last hop is http or https, requests go to that hop in
// absolute form (a parent cache keeps working), with Proxy-Authorization
// from its user info; otherwise connections are dialed through the route.
// It never reads proxy settings from the environment and never asks for
// compression itself. An unknown route gives a RoundTripper that fails.
func (r *Router) Transport(name string) http.RoundTripper {
	rt, ok := r.lookup(name)
	if !ok {
		return failingTransport{name}
	}
	if rt == nil {
		rt = r.direct0
	}
	rt.tmu.Lock()
	defer rt.tmu.Unlock()
	if rt.tr == nil {
		rt.tr = r.newTransport(rt)
	}
	if rt.last != nil {
		return parentTransport{r: r, rt: rt}
	}
	if r.isolates(rt, 0) {
		return isoTransport{r: r, rt: rt}
	}
	if rt == r.direct0 {
		if rt.ka == nil {
			rt.ka = &keepAlive{dial: rt.tr.DialContext}
		}
		return checkedTransport{rt.tr, rt.ka}
	}
	return rt.tr
}

// checkedTransport is the direct route's Transport: a GET or HEAD
// without a body goes to its keep-alive pool ka (keepalive.go), the rest
// to tr. In both, a pooled connection was checked when it was dialed, for the request that dialed it; before a
// request is written on any connection, the request's own Check decides
// the connection's address again (another request's client, user or time
// may differ). A refused connection is closed before a byte is written on
// it: the pool or the Transport then dials anew, and that dial is checked
// and refused, or the request fails.
type checkedTransport struct {
	tr *http.Transport
	ka *keepAlive
}

// RoundTrip sends req, re-checking a reused connection's address.
func (c checkedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	check := checkFrom(req.Context())
	if simple(req) {
		return c.ka.roundTrip(req, check)
	}
	if check == nil {
		return c.tr.RoundTrip(req)
	}
	trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
		ap, ok := remoteAddrPort(info.Conn)
		if !ok || check(netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())) != nil {
			info.Conn.Close()
		}
	}}
	return c.tr.RoundTrip(req.WithContext(httptrace.WithClientTrace(req.Context(), trace)))
}

// remoteAddrPort returns c's remote address; ok is false when it has none
// that parses as an address and port.
func remoteAddrPort(c net.Conn) (netip.AddrPort, bool) {
	ra := c.RemoteAddr()
	if ta, ok := ra.(*net.TCPAddr); ok { // the direct route's: no string to format and parse
		ap := ta.AddrPort()
		return ap, ap.IsValid()
	}
	if ra == nil {
		return netip.AddrPort{}, false
	}
	ap, err := netip.ParseAddrPort(ra.String())
	return ap, err == nil
}

// parentTransport sends plain requests to a route's http(s) last hop and
// turns its 407 into an upstream auth failure: the parent's demand for
// credentials is Sluice's problem, never the client's, and a client that
// got the 407 would take it for Sluice's own.
type parentTransport struct {
	r  *Router
	rt *route
}

// RoundTrip forwards req through the route's Transport.
func (p parentTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := p.rt.tr.RoundTrip(req)
	if err != nil || resp.StatusCode != http.StatusProxyAuthRequired {
		return resp, err
	}
	resp.Body.Close()
	err = &Error{
		Kind: KindUpstreamAuth, Addr: req.URL.Host, Upstream: p.rt.name, Hop: len(p.rt.chain), HopAddr: p.rt.last.Redacted(),
		Err: fmt.Errorf("upstream answered %s", resp.Status), hopFault: true,
	}
	p.r.noteFailure(p.rt, err)
	return nil, err
}

func (r *Router) newTransport(rt *route) *http.Transport {
	tr := &http.Transport{
		Proxy:                  nil, // never ProxyFromEnvironment
		DisableCompression:     true,
		MaxIdleConns:           1024,
		MaxIdleConnsPerHost:    64,
		IdleConnTimeout:        90 * time.Second,
		TLSHandshakeTimeout:    10 * time.Second,
		ExpectContinueTimeout:  time.Second,
		MaxResponseHeaderBytes: 1 << 20,
	}
	switch {
	case rt.name == RouteDirect:
		tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			return r.direct.dialOrigin(ctx, network, addr, checkFrom(ctx))
		}
	case rt.last != nil:
		last, fwd := rt.last, rt.proxyHop
		tr.Proxy = func(*http.Request) (*url.URL, error) { return last, nil }
		n := len(rt.chain)
		tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := fwd.DialContext(ctx, network, addr)
			if err == nil {
				return c, nil
			}
			var de *Error
			if !errors.As(err, &de) || !de.hopFault {
				// Reaching the last hop failed: it is to blame.
				err = &Error{
					Kind: Classify(err), Addr: addr, Upstream: rt.name, Hop: n, HopAddr: last.Redacted(),
					Err:      fmt.Errorf("reaching upstream: %w", err),
					hopFault: ctx.Err() == nil,
				}
			}
			r.noteFailure(rt, err)
			return nil, err
		}
		if strings.EqualFold(last.Scheme, "https") {
			cfg := tlsConfig(rt.tls, last.Hostname())
			tr.DialTLSContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
				c, err := tr.DialContext(ctx, network, addr)
				if err != nil {
					return nil, err
				}
				tc := tls.Client(c, cfg)
				if err := tc.HandshakeContext(ctx); err != nil {
					c.Close()
					return nil, fmt.Errorf("dial: tls to upstream %s: %w", last.Redacted(), err)
				}
				return tc, nil
			}
		}
	default:
		tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			return r.dial(ctx, rt, network, addr)
		}
	}
	return tr
}

// failingTransport answers every request of an unknown route with an error.
type failingTransport struct{ route string }

func (f failingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		req.Body.Close()
	}
	return nil, &Error{Kind: KindOther, Addr: req.URL.Host, Upstream: f.route, Err: fmt.Errorf("%w %q", ErrUnknownRoute, f.route)}
}

// CloseIdleConnections closes the idle connections of every route's
// Transport.
func (r *Router) CloseIdleConnections() {
	for _, rt := range append(slices.Collect(maps.Values(r.routes)), r.direct0) {
		rt.tmu.Lock()
		if rt.tr != nil {
			rt.tr.CloseIdleConnections()
		}
		if rt.ka != nil {
			rt.ka.closeIdle()
		}
		for _, tr := range rt.itr {
			tr.CloseIdleConnections()
		}
		rt.tmu.Unlock()
	}
}

// Resolves reports whether route dials directly, so that looking up the
// destination name locally leaks nothing. It is false for any route with
// an upstream, and for a failover route unless every member is direct.
// An unknown route is false.
func (r *Router) Resolves(name string) bool {
	rt, ok := r.lookup(name)
	if !ok {
		return false
	}
	if rt == nil {
		return true
	}
	if rt.dialer != nil || len(rt.failover) == 0 {
		return false
	}
	for _, m := range rt.failover {
		if !r.Resolves(m) {
			return false
		}
	}
	return true
}
