package server

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/sluiceproxy/sluice/filter"
	"github.com/sluiceproxy/sluice/proxy/dial"
	"github.com/sluiceproxy/sluice/rules"
)

// The reasons of a refusal at dial time, for access log lines.
const (
	// ReasonLoop refuses one of Sluice's own listening addresses.
	ReasonLoop = "loop"
	// ReasonResolved refuses an address an IP or CIDR rule blocks.
	ReasonResolved = "resolved address blocked"
	// ReasonPrivate refuses a private address under deny_private.
	ReasonPrivate = "private address"
)

// guard decides, at dial time and for both front ends, each address a
// direct dial to an origin is about to connect to (issue 9): never one of
// Sluice's own listeners; with check_resolved, never an address an IP or
// CIDR rule blocks for the same client, user, port and time; with
// deny_private, never a private address unless a rule explicitly allows
// the name or the address. It is called with the address actually dialed,
// after the one resolution the dialer makes.
type guard struct {
	engine        *filter.Engine
	checkResolved bool
	denyPrivate   bool
	own           *atomic.Pointer[[]netip.AddrPort] // the listeners; nil or empty before Run listens
	localAddrs    func() []netip.Addr               // the host's interface addresses
}

func newGuard(st *state, own *atomic.Pointer[[]netip.AddrPort]) *guard {
	return &guard{
		engine:        st.engine,
		checkResolved: st.cfg.CheckResolved,
		denyPrivate:   st.cfg.DenyPrivate,
		own:           own,
		localAddrs:    interfaceAddrs,
	}
}

// Check decides addr for req, which d allowed. It returns nil, nil when
// addr may be dialed; otherwise the refusing decision and an error
// wrapping dial.ErrLoop or dial.ErrBlocked.
//
// Check runs on every dial, deep in the goroutine of the connection: it
// takes and returns pointers and keeps its frame small (the rules' checks
// are in a function of their own), so that the dial does not grow that
// goroutine's stack.
func (g *guard) Check(req *filter.Request, d *filter.Decision, addr netip.AddrPort) (*filter.Decision, error) {
	a := addr.Addr().Unmap()
	if g.isOwn(netip.AddrPortFrom(a, addr.Port())) {
		return &filter.Decision{Verdict: filter.Block, Reason: ReasonLoop},
			fmt.Errorf("%w %s: Sluice listens there", dial.ErrLoop, addr)
	}
	if !g.checkResolved && !g.denyPrivate {
		return nil, nil
	}
	return g.checkRules(req, d, a, addr)
}

// checkRules is Check under check_resolved or deny_private: a is addr's
// address, unmapped.
//
//go:noinline
func (g *guard) checkRules(req *filter.Request, d *filter.Decision, a netip.Addr, addr netip.AddrPort) (*filter.Decision, error) {
	ad := *d
	if !sameAddr(req.Host, a) {
		ipReq := *req
		ipReq.Host = a.String()
		ad = g.engine.Decide(ipReq)
	}
	if g.checkResolved && ad.Verdict == filter.Block && !ad.Default && ad.Rule.Pattern != "" {
		rd := new(filter.Decision) // only a refusal is on the heap, not ad on every dial
		*rd = ad
		rd.Reason = ReasonResolved
		return rd, fmt.Errorf("%w %s by %s (%s)", dial.ErrBlocked, addr, rd.Rule, rd.Rule.Pattern)
	}
	if g.denyPrivate && isPrivate(a) && !explicitAllow(*d) && !explicitAllow(ad) {
		return &filter.Decision{Verdict: filter.Block, Reason: ReasonPrivate},
			fmt.Errorf("%w %s: private address (deny_private)", dial.ErrBlocked, addr)
	}
	return nil, nil
}

// sameAddr reports whether host, a request's normalized host, is a as
// a.String() writes it: then the decision on the host is the decision on
// the address. It formats a on the stack: no string per dial.
func sameAddr(host string, a netip.Addr) bool {
	var buf [48]byte
	return string(a.AppendTo(buf[:0])) == host
}

// explicitAllow reports whether d allows by a rule whose destination list
// matched: not the default, not a rule without destinations. A safesearch
// decision does not count: the address dialed is the enforcement host's,
// a name no rule named.
func explicitAllow(d filter.Decision) bool {
	return d.Verdict == filter.Allow && !d.Default && d.Rule.Pattern != "" && d.Enforce == ""
}

// isOwn reports whether ap is one of Sluice's listening addresses: a
// listener's own address, or any local address (loopback ranges, every
// interface address) on the port of a listener on 0.0.0.0 or ::.
func (g *guard) isOwn(ap netip.AddrPort) bool {
	if g.own == nil {
		return false
	}
	lns := g.own.Load()
	if lns == nil {
		return false
	}
	wildcard := false
	for _, l := range *lns {
		if l.Port() != ap.Port() {
			continue
		}
		if l.Addr() == ap.Addr() {
			return true
		}
		wildcard = wildcard || l.Addr().IsUnspecified()
	}
	if !wildcard {
		return false
	}
	if ap.Addr().IsLoopback() || ap.Addr().IsUnspecified() {
		return true
	}
	for _, a := range g.localAddrs() {
		if a == ap.Addr() {
			return true
		}
	}
	return false
}

// interfaceAddrs lists the host's addresses now: interfaces come and go,
// and it is only asked for dials to a wildcard listener's port.
func interfaceAddrs() []netip.Addr {
	ifs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	out := make([]netip.Addr, 0, len(ifs))
	for _, ia := range ifs {
		if n, ok := ia.(*net.IPNet); ok {
			if a, ok := netip.AddrFromSlice(n.IP); ok {
				out = append(out, a.Unmap())
			}
		}
	}
	return out
}

// privateRanges are refused by deny_private besides what netip classifies
// as loopback, private, link-local and unspecified.
var privateRanges = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),     // "this network": Linux reaches the local host
	netip.MustParsePrefix("100.64.0.0/10"), // CGNAT (RFC 6598)
}

// isPrivate reports whether a is loopback, private (RFC 1918, fc00::/7),
// link-local (169.254/16 with 169.254.169.254, fe80::/10), CGNAT or
// unspecified.
func isPrivate(a netip.Addr) bool {
	a = a.Unmap()
	if a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast() || a.IsUnspecified() {
		return true
	}
	for _, p := range privateRanges {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// listenAddrs returns the addresses of the open listeners.
func listenAddrs(lns []net.Listener) []netip.AddrPort {
	out := make([]netip.AddrPort, 0, len(lns))
	for _, ln := range lns {
		if ap, err := netip.ParseAddrPort(ln.Addr().String()); err == nil {
			out = append(out, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
		}
	}
	return out
}

// policy is the engine as both front ends see it: an unspecified IP
// literal (0.0.0.0, ::) is matched as the loopback address Linux connects
// it to, so that `block: ["127.0.0.0/8"]` covers it too. The dialer never
// dials it anyway.
//
// The temporary exceptions (`sluice allow`) are consulted before every
// rule: the server keeps them beside the pure engine and swaps them when
// the state file changes.
type policy struct {
	*filter.Engine
	exc *atomic.Pointer[filter.Exceptions] // nil: none
	via string                             // the default route, for an exception
}

// Decide decides req with the unspecified address read as loopback.
func (p policy) Decide(req filter.Request) filter.Decision {
	switch req.Host {
	case "0.0.0.0":
		req.Host = "127.0.0.1"
	case "::":
		req.Host = "::1"
	}
	if p.exc != nil {
		if d, ok := p.exc.Load().Decide(req, p.via); ok {
			return d
		}
	}
	return p.Engine.Decide(req)
}

// ResolvedStep is what the dial-time guard decides about one address a
// name resolves to, for `sluice check`.
type ResolvedStep struct {
	// Addr is the address, with the request's port.
	Addr netip.AddrPort
	// Decision is the refusing decision when Err is set.
	Decision filter.Decision
	// Err is the refusal, or nil when the address would be dialed.
	Err error
}

// Decide decides req as a running server's front ends do: an unspecified
// IP literal is matched as the loopback address it reaches.
func Decide(eng *filter.Engine, req filter.Request) filter.Decision {
	return policy{Engine: eng}.Decide(req)
}

// DecideExcept is Decide with the temporary exceptions x consulted first,
// an exception routed by via (the default route).
func DecideExcept(eng *filter.Engine, x *filter.Exceptions, via string, req filter.Request) filter.Decision {
	var p atomic.Pointer[filter.Exceptions]
	p.Store(x)
	return policy{Engine: eng, exc: &p, via: via}.Decide(req)
}

// ExplainResolved resolves req.Host as the direct route would (hosts:,
// then Go's own resolver, bounded by timeout) and tells what the guard
// decides about each address, taking the config's listen addresses as
// Sluice's own. d is the decision on the name; it must allow. It returns
// no step when d's route does not dial directly (an upstream resolves the
// name). It is for `sluice check`: a running server decides each address
// once, on the dial itself.
func ExplainResolved(ctx context.Context, cfg *rules.Config, eng *filter.Engine, req filter.Request, d filter.Decision, timeout time.Duration) ([]ResolvedStep, error) {
	r, err := newRouter(cfg)
	if err != nil {
		return nil, err
	}
	if !r.Resolves(d.Via) {
		return nil, nil
	}
	direct := &dial.Direct{Timeout: timeout, Hosts: cfg.Hosts}
	dialed := req.Host
	if d.Enforce != "" {
		dialed = d.Enforce // safesearch: the enforcement host is what is dialed
	}
	addrs, err := direct.Lookup(ctx, dialed)
	if err != nil {
		return nil, err
	}
	var own []netip.AddrPort
	for _, l := range cfg.Listen {
		host, port, err := net.SplitHostPort(l)
		if err != nil {
			continue
		}
		if host == "" {
			host = "::"
		}
		if ap, err := netip.ParseAddrPort(net.JoinHostPort(host, port)); err == nil {
			own = append(own, ap)
		} else if as, err := direct.Lookup(ctx, host); err == nil {
			if ap, err := netip.ParseAddrPort(net.JoinHostPort("0.0.0.0", port)); err == nil {
				for _, a := range as {
					own = append(own, netip.AddrPortFrom(a, ap.Port()))
				}
			}
		}
	}
	var p atomic.Pointer[[]netip.AddrPort]
	p.Store(&own)
	g := &guard{engine: eng, checkResolved: cfg.CheckResolved, denyPrivate: cfg.DenyPrivate, own: &p, localAddrs: interfaceAddrs}
	steps := make([]ResolvedStep, 0, len(addrs))
	for _, a := range addrs {
		ap := netip.AddrPortFrom(a, req.Port)
		step := ResolvedStep{Addr: ap}
		if a.IsUnspecified() {
			step.Decision = filter.Decision{Verdict: filter.Block, Reason: "unspecified address"}
			step.Err = fmt.Errorf("%w %s", dial.ErrUnspecified, a)
		} else {
			var rd *filter.Decision
			if rd, step.Err = g.Check(&req, &d, ap); rd != nil {
				step.Decision = *rd
			}
		}
		steps = append(steps, step)
	}
	return steps, nil
}
