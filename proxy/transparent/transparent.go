// Package transparent is Sluice's third front end: connections that a
// gateway's firewall redirected to a transparent listener (nftables
// `redirect`, iptables REDIRECT), from clients that know of no proxy. The
// original destination comes from the socket (OriginalDst); the name
// decided on comes from the client's first bytes, a TLS ClientHello's SNI
// or an HTTP/1.x Host, read and decided by packages sniff and sniffpolicy
// as for sniffed CONNECT and SOCKS tunnels. An allowed connection is
// dialed to the original destination address, never to a lookup of the
// name, and spliced, the bytes read forwarded unchanged.
package transparent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/sluiceproxy/sluice/filter"
	"github.com/sluiceproxy/sluice/proxy"
	"github.com/sluiceproxy/sluice/proxy/accesslog"
	"github.com/sluiceproxy/sluice/proxy/dial"
	"github.com/sluiceproxy/sluice/proxy/observe"
	"github.com/sluiceproxy/sluice/proxy/relay"
	"github.com/sluiceproxy/sluice/proxy/reqid"
	"github.com/sluiceproxy/sluice/proxy/sniff"
	"github.com/sluiceproxy/sluice/proxy/sniff/sniffpolicy"
	"github.com/sluiceproxy/sluice/rules"
)

// Proto is the access line's proto and the metrics' frontend.
const Proto = observe.Transparent

// Reasons of the refusals this front end decides itself.
const (
	// ReasonHostMismatch refuses a name that does not resolve to the
	// original destination (verify_host).
	ReasonHostMismatch = "host mismatch"
	// ReasonUnnamed refuses a connection whose first bytes carry no
	// usable name, under `unnamed: block`.
	ReasonUnnamed = "unnamed"
	// ReasonLoop refuses a connection to one of Sluice's own listeners:
	// not redirected, or redirected back to Sluice.
	ReasonLoop = "loop"
	// ReasonNoDestination refuses a connection whose original destination
	// cannot be read: it was not redirected.
	ReasonNoDestination = "no original destination"
)

// Server serves redirected connections. Its fields are set before the
// first ServeConn and not changed after.
type Server struct {
	// Policy decides each connection. Nil blocks everything.
	Policy sniffpolicy.Policy
	// Guard decides, before dialing, the original destination of an
	// allowed connection: never one of Sluice's own listeners, and the
	// check_resolved and deny_private checks. It returns the refusing
	// decision with its error, nil, nil when addr may be dialed. Nil
	// checks nothing.
	Guard func(req *filter.Request, d *filter.Decision, addr netip.AddrPort) (*filter.Decision, error)
	// Own reports whether addr is one of Sluice's own listening
	// addresses: such a connection is refused with ReasonLoop before
	// anything else is decided. Nil: none is.
	Own func(addr netip.AddrPort) bool
	// Dial connects to addr on route (a decision's Via; "" is the default
	// route). Nil dials directly.
	Dial func(ctx context.Context, route, network, addr string) (net.Conn, error)
	// Lookup resolves a name as the direct route does (hosts:, then the
	// resolver), for VerifyHost. Nil fails every lookup.
	Lookup func(ctx context.Context, host string) ([]netip.Addr, error)
	// VerifyHost requires the sniffed name to resolve to the original
	// destination address; otherwise the connection is refused with
	// ReasonHostMismatch.
	VerifyHost bool
	// Unnamed is the action for a connection that carries no usable
	// name: rules.Block (also for "") closes it; rules.Allow decides the
	// original destination address by the IP rules.
	Unnamed rules.Action
	// Sniff bounds each read of the first bytes.
	Sniff sniff.Options
	// BlockPage is what a blocked plain HTTP request is answered.
	BlockPage proxy.BlockPage
	// IdleTimeout ends a spliced connection idle in both directions.
	// Zero means 5m.
	IdleTimeout time.Duration
	// Access gets each connection's access line. Nil logs it as JSON to Logger.
	Access func(*accesslog.Record)
	// Observe gets each connection once, when its access line is written.
	Observe func(observe.Access)
	// Logger receives the access lines when Access is nil. Nil discards them.
	Logger *slog.Logger
	// Now returns the time rules are decided at. Nil means time.Now.
	Now func() time.Time
}

// access is what one connection's access line reports.
type access struct {
	rec      accesslog.Record
	decision *filter.Decision
	dialErr  error
	route    string // the failover member that carried the dial ("pool/member"), or ""
	tunnel   bool   // handed to relay.Start, whose end closes c and logs
	obs      observe.Access
	settled  bool // rec and obs hold the decision's fields; decision is nil
}

// ServeConn serves c, accepted by a transparent listener, whose original
// destination is orig (invalid when it could not be read, see
// OriginalDst; such a connection is closed). It closes c, or hands it to
// a tunnel that the relay's goroutines carry on (relay.Start) until it
// ends or ctx is cancelled, and then closes it.
func (s *Server) ServeConn(ctx context.Context, c net.Conn, orig netip.AddrPort) {
	a := &access{rec: accesslog.Record{ID: reqid.New(), Start: time.Now(), Client: c.RemoteAddr().String(), Proto: Proto, Reply: -1}}
	defer func() {
		if !a.tunnel { // else the tunnel ends the connection
			c.Close()
			s.logAccess(a)
		}
	}()
	if !orig.IsValid() {
		a.rec.Reason = ReasonNoDestination
		return
	}
	a.rec.Target = orig.String()
	req := filter.Request{Client: clientAddr(c), Host: orig.Addr().String(), Port: orig.Port(), Time: s.now()}
	// The first decision is the sniffed name's alone: the address the
	// client connected to carries no name to decide on before sniffing.
	// sniffpolicy decides the name (Mode all: whatever the address) and
	// blocks ambiguous bytes; the unnamed case is decided below.
	open := filter.Decision{Verdict: filter.Allow}
	o := sniffpolicy.Check(c, sniffpolicy.Config{Mode: rules.SniffAll, Unnamed: rules.Allow, Options: s.Sniff}, s.Policy, req, open)
	a.rec.Sniffed = o.LogAttrs()
	d := o.Decision
	switch {
	case s.Own != nil && s.Own(orig):
		d = filter.Decision{Verdict: filter.Block, Reason: ReasonLoop}
		a.rec.Err = fmt.Errorf("transparent: %s is Sluice's own listener", orig)
	case o.Name == "" && d.Verdict == filter.Allow:
		d = s.unnamed(req)
	case o.Name == req.Host:
		// A Host or SNI that is the address itself: sniffpolicy kept the
		// first decision, which is no decision here.
		d = s.decide(req)
	}
	if o.Name != "" {
		req.Host = o.Name
	}
	if d.Verdict == filter.Allow && o.Name != "" && s.VerifyHost {
		if err := s.verify(ctx, o.Name, orig.Addr()); err != nil {
			a.rec.Err = err
			d = filter.Decision{Verdict: filter.Block, Reason: ReasonHostMismatch}
		}
	}
	a.decision = &d
	if d.Verdict == filter.Allow && s.Guard != nil {
		if rd, err := s.Guard(&req, &d, orig); err != nil {
			a.decision, a.rec.Err = filter.OrBlock(rd), err
		}
	}
	if a.decision.Verdict != filter.Allow {
		if o.Result.Proto == sniff.HTTP {
			s.refuseHTTP(c, a, req, *a.decision)
		}
		// TLS is closed after its ClientHello: without interception no
		// certificate could carry a page. Other bytes are closed as well.
		return
	}
	// The client's identity, for circuit isolation on an isolating route.
	// The dial runs on this goroutine, which notes the failover member.
	ictx := dial.WithIdentity(ctx, dial.Identity{Client: req.Client})
	ictx = dial.WithRouteNote(ictx, func(route string) { a.route = route })
	origin, err := s.dial(ictx, d.Via, orig.String())
	if err != nil {
		a.rec.Err, a.dialErr = err, err
		return
	}
	if d.Route() == "direct" || strings.HasSuffix(a.route, "/"+dial.RouteDirect) {
		if ap, err := netip.ParseAddrPort(origin.RemoteAddr().String()); err == nil {
			a.rec.Peer = ap.Addr().Unmap()
		}
	}
	var originData []byte
	if o.Result.Proto == sniff.None {
		// The client waits for the server to speak first (or is slow):
		// whichever speaks first, a client's late first bytes are still
		// sniffed and decided.
		req.Host = orig.Addr().String()
		o.Decision = d
		o, originData = sniffpolicy.Late(ctx, c, origin, sniffpolicy.Config{Mode: rules.SniffAll, Unnamed: rules.Allow, Options: s.Sniff}, s.Policy, req, o, s.IdleTimeout)
		a.rec.Sniffed = o.LogAttrs()
		if o.Name != "" && o.Decision.Verdict == filter.Allow && s.VerifyHost {
			if err := s.verify(ctx, o.Name, orig.Addr()); err != nil {
				a.rec.Err = err
				o.Decision = filter.Decision{Verdict: filter.Block, Reason: ReasonHostMismatch}
			}
		}
		d = o.Decision
		a.decision = &d
		if d.Verdict != filter.Allow {
			origin.Close()
			return
		}
	}
	a.rec.Granted = true
	// The relay's goroutines carry the tunnel on; this one returns and
	// frees its stack (see relay.Start).
	a.tunnel = true
	a.settle()
	relay.Start(ctx, relay.WithPrefix(c, o.Result.Data), relay.WithPrefix(origin, originData), s.idleTimeout(), func(st relay.Stats, err error) {
		a.rec.Up, a.rec.Down = st.Up, st.Down
		if err != nil {
			a.rec.Err = err
		}
		s.logAccess(a)
	})
}

// unnamed decides a connection without a usable name: blocked, or under
// `unnamed: allow` decided on the original destination address.
func (s *Server) unnamed(req filter.Request) filter.Decision {
	if s.Unnamed != rules.Allow {
		return filter.Decision{Verdict: filter.Block, Reason: ReasonUnnamed}
	}
	return s.decide(req)
}

func (s *Server) decide(req filter.Request) filter.Decision {
	if s.Policy == nil {
		return filter.Decision{Verdict: filter.Block, Reason: "no policy configured", Default: true}
	}
	return s.Policy.Decide(req)
}

// verify checks that name resolves to addr (verify_host).
func (s *Server) verify(ctx context.Context, name string, addr netip.Addr) error {
	if ip, err := netip.ParseAddr(name); err == nil {
		if ip.Unmap() == addr {
			return nil
		}
		return fmt.Errorf("transparent: %s: the client named %s, not its destination", ReasonHostMismatch, name)
	}
	if s.Lookup == nil {
		return fmt.Errorf("transparent: %s: no resolver to check %s", ReasonHostMismatch, name)
	}
	addrs, err := s.Lookup(ctx, name)
	if err != nil {
		return fmt.Errorf("transparent: %s: %s does not resolve: %w", ReasonHostMismatch, name, err)
	}
	for _, a := range addrs {
		if a.Unmap() == addr {
			return nil
		}
	}
	return fmt.Errorf("transparent: %s: %s does not resolve to %s", ReasonHostMismatch, name, addr)
}

// refuseHTTP answers a blocked plain HTTP request with the block page.
func (s *Server) refuseHTTP(c net.Conn, a *access, req filter.Request, d filter.Decision) {
	pd := &proxy.BlockPageData{Host: req.Host, Port: req.Port, Category: d.Category, Reason: d.Reason,
		Time: req.Time, ID: a.rec.ID}
	if req.Client.IsValid() {
		pd.Client = req.Client.String()
	}
	resp, err := s.BlockPage.Response(pd, d)
	if err != nil && a.rec.Err == nil {
		a.rec.Err = err
	}
	c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(resp); err == nil {
		a.rec.Status = 403
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
}

func (s *Server) dial(ctx context.Context, route, addr string) (net.Conn, error) {
	if s.Dial != nil {
		return s.Dial(ctx, route, "tcp", addr)
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", addr)
}

func (s *Server) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Server) idleTimeout() time.Duration {
	if s.IdleTimeout > 0 {
		return s.IdleTimeout
	}
	return 5 * time.Minute
}

// logAccess writes the connection's access line and reports it to Observe.
func (s *Server) logAccess(a *access) {
	a.settle()
	r := &a.rec
	r.Duration = time.Since(r.Start)
	a.obs.Up, a.obs.Down = r.Up, r.Down
	if s.Observe != nil {
		s.Observe(a.obs)
	}
	switch {
	case s.Access != nil:
		s.Access(r)
	case s.Logger != nil:
		accesslog.LogJSON(s.Logger, r)
	}
}

// settle writes what a's decision says into its access record and
// Observe report, once, and drops the decision: a tunnel keeps only these
// until it ends.
func (a *access) settle() {
	if a.settled {
		return
	}
	a.settled = true
	r := &a.rec
	a.obs = observe.Access{Frontend: Proto, Verdict: observe.None, DialErr: a.dialErr}
	if d := a.decision; d != nil {
		r.Decided = true
		r.Verdict, r.Reason, r.Rule = d.Verdict.String(), d.Reason, d.RuleName()
		r.Category, r.Route = d.Category, d.Route()
		if a.route != "" && r.Route != "" {
			r.Route = a.route
		}
		a.obs.Verdict, a.obs.Category = observe.Allow, d.Category
		if d.Verdict != filter.Allow {
			a.obs.Verdict = observe.Block
		}
		a.obs.Host = sniffedHost(r)
	}
	a.decision, a.dialErr = nil, nil
}

// sniffedHost is the host the metrics count: the sniffed name, else the
// original destination's address.
func sniffedHost(r *accesslog.Record) string {
	for _, a := range r.Sniffed {
		if a.Key == "sniffed" {
			return a.Value.String()
		}
	}
	if h, _, err := net.SplitHostPort(r.Target); err == nil {
		return h
	}
	return r.Target
}

func clientAddr(c net.Conn) netip.Addr {
	if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

// errNotTCP is returned by Accept's callers for a conn that is not TCP.
var errNotTCP = errors.New("transparent: not a TCP connection")

// Destination returns c's original destination, unwrapping c to its
// *net.TCPConn.
func Destination(c net.Conn) (netip.AddrPort, error) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return netip.AddrPort{}, errNotTCP
	}
	return OriginalDst(tc)
}
