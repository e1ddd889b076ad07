// Package dial is the one shared dialer: direct connections with timeouts
// and a hosts map, or chains of upstream proxies (http, https, socks5,
// socks5h, socks4a). It has no policy: it dials what it is told to, except
// that it never dials an unspecified address (0.0.0.0, ::), and that on the
// direct route each address a name resolves to passes the Check the front
// end put in the dial's context (WithCheck) before it is dialed.
// Its failures are typed (*Error) so that front ends can answer precisely.
package dial

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
)

// Dialer opens connections. Every dial takes a context; there is no
// context-less Dial, because the fallback for one can leak a goroutine.
type Dialer interface {
	DialContext(ctx context.Context, network, addr string) (net.Conn, error)
}

// Kind classifies a dial failure.
type Kind uint8

// The kinds of dial failure, each with its own answer to the client
// (see the table in the README).
const (
	// KindOther is any failure not listed below: SOCKS 0x01, HTTP 502.
	KindOther Kind = iota
	// KindDNS means the name does not resolve: SOCKS 0x04, HTTP 502.
	KindDNS
	// KindHostUnreachable means no route to the host: SOCKS 0x04, HTTP 502.
	KindHostUnreachable
	// KindNetUnreachable means the network is unreachable: SOCKS 0x03, HTTP 502.
	KindNetUnreachable
	// KindRefused means the target refused the connection: SOCKS 0x05, HTTP 502.
	KindRefused
	// KindTimeout means the dial timed out: SOCKS 0x06, HTTP 504.
	KindTimeout
	// KindUpstream means an upstream proxy failed or could not serve the request: SOCKS 0x01, HTTP 502.
	KindUpstream
	// KindUpstreamAuth means an upstream proxy rejected our credentials (407): SOCKS 0x01, HTTP 502.
	KindUpstreamAuth
	// KindLoop means the address is one of Sluice's own listeners: SOCKS
	// 0x02, HTTP 403. Nothing was dialed.
	KindLoop
	// KindBlocked means a Check refused every address of the target by
	// policy (an IP or CIDR rule, deny_private): SOCKS 0x02, HTTP 403.
	// Nothing was dialed.
	KindBlocked
	// KindUnspecified means the target is, or resolves only to, an
	// unspecified address (0.0.0.0, ::), which Linux connects to the local
	// host: SOCKS 0x04, HTTP 400. Nothing was dialed.
	KindUnspecified
	// KindUpstreamRefused means an upstream proxy's own policy refused the
	// target (HTTP 403, SOCKS5 0x02): SOCKS 0x02, HTTP 403.
	KindUpstreamRefused
)

var kindNames = [...]string{"other", "dns", "host unreachable", "network unreachable", "refused", "timeout", "upstream failed", "upstream auth failed",
	"loop", "blocked", "unspecified address", "upstream refused"}

// The refusals a Check returns, wrapped with the reason. Classify maps them
// to KindLoop, KindBlocked and KindUnspecified.
var (
	// ErrLoop refuses an address Sluice itself listens on.
	ErrLoop = errors.New("dial: own listener")
	// ErrBlocked refuses an address by policy.
	ErrBlocked = errors.New("dial: address blocked")
	// ErrUnspecified refuses an unspecified address.
	ErrUnspecified = errors.New("dial: unspecified address")
)

// String names the kind for logs.
func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "unknown"
}

// Error is a failed dial. Its message never contains a password.
type Error struct {
	// Kind classifies the failure.
	Kind Kind
	// Addr is the target that was dialed.
	Addr string
	// Upstream names the upstream route, or "" for a direct dial.
	Upstream string
	// Hop is the 1-based hop of the chain that failed, or 0 for a direct dial
	// or the final connection to the origin.
	Hop int
	// HopAddr is the redacted URL of the failing hop, or "".
	HopAddr string
	// Err is the underlying error.
	Err error

	// hopFault is set when the hop itself failed (could not be reached,
	// timed out, broke the protocol or rejected our credentials), as
	// opposed to the hop reporting that the target failed. The Router
	// marks such a hop down.
	hopFault bool
}

// Error formats the failure for a log line, saying each thing once: the
// target, the route and hop (redacted), then the kind and the cause
// without Go's repeated "dial tcp ADDR: connect:":
//
//	dial 127.0.0.1:9: connection refused
//	dial x.test:443 via upstream office (hop http://u:xxxxx@10.0.0.1:3128): refused: reaching upstream 10.0.0.1:3128: connection refused
func (e *Error) Error() string {
	s := "dial " + e.Addr
	if e.Upstream != "" {
		s += " via upstream " + e.Upstream
	}
	if e.HopAddr != "" {
		s += " (hop " + e.HopAddr + ")"
	}
	return s + ": " + e.reason()
}

// reason is the kind and the cause, the kind left out when the cause
// says it already ("connection refused" is a refusal).
func (e *Error) reason() string {
	kind := e.Kind.String()
	if e.Err == nil {
		return kind
	}
	cause := causeText(e.Err)
	if strings.Contains(cause, kind) {
		return cause
	}
	return kind + ": " + cause
}

// causeText writes err without the repetitions of the errors it wraps:
// a nested *Error gives its reason (its target is the hop, named
// already), a *net.OpError the system's reason, a *net.DNSError its
// reason ("no such host"), and the sentinels' "dial: " prefix goes.
func causeText(err error) string {
	s := err.Error()
	var de *Error
	var oe *net.OpError
	var dns *net.DNSError
	switch {
	case errors.As(err, &de):
		s = strings.Replace(s, de.Error(), de.reason(), 1)
	case errors.As(err, &dns):
		s = strings.Replace(s, dns.Error(), dns.Err, 1)
	case errors.As(err, &oe):
		reason := oe.Err
		var se *os.SyscallError
		if errors.As(reason, &se) {
			reason = se.Err
		}
		s = strings.Replace(s, oe.Error(), reason.Error(), 1)
	}
	return strings.ReplaceAll(s, "dial: ", "")
}

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

// Timeout reports whether the dial timed out, so that *Error satisfies
// net.Error's Timeout.
func (e *Error) Timeout() bool { return e.Kind == KindTimeout }

// Refused reports whether k is a refusal by the dialer's guard (loop,
// blocked, unspecified address): nothing was dialed, and the target, not a
// hop, is to blame.
func (k Kind) Refused() bool { return k == KindLoop || k == KindBlocked || k == KindUnspecified }

// Check decides each address a direct dial to an origin is about to
// connect to, after resolution: a non-nil error (wrapping ErrLoop,
// ErrBlocked or ErrUnspecified) refuses that address, which is then never
// dialed. Front ends put one in the dial's context with WithCheck; the
// Router calls it only on the direct route's final hop to the origin, never
// for an upstream's own address (upstream routes resolve the destination
// remotely). It must be safe for concurrent use.
type Check func(netip.AddrPort) error

type checkKey struct{}

// WithCheck returns ctx carrying check for the direct dials made with it.
func WithCheck(ctx context.Context, check Check) context.Context {
	return context.WithValue(ctx, checkKey{}, check)
}

// routeKey carries a dial's route note (WithRouteNote).
type routeKey struct{}

// WithRouteNote returns ctx carrying note: when a dial made with it on a
// failover route succeeds, the Router calls note with the route that
// carried it, "pool/member" ("pool/inner/member" when the member is itself
// a failover list), before the dial returns. Chains and the direct route
// are not noted: their name says it all.
func WithRouteNote(ctx context.Context, note func(route string)) context.Context {
	return context.WithValue(ctx, routeKey{}, note)
}

func routeNoteFrom(ctx context.Context) func(string) {
	n, _ := ctx.Value(routeKey{}).(func(string))
	return n
}

// checkFrom returns the Check in ctx, or nil.
func checkFrom(ctx context.Context) Check {
	c, _ := ctx.Value(checkKey{}).(Check)
	return c
}

// Classify tells the Kind of any dial error: the Kind of a *Error in err's
// chain, or else the kind of the raw error (a *net.DNSError, an errno, a
// deadline). It looks at types and values only, never at message text.
// A nil error, a cancelled context and anything unknown are KindOther.
func Classify(err error) Kind {
	if err == nil {
		return KindOther
	}
	var de *Error
	if errors.As(err, &de) {
		return de.Kind
	}
	return classifyRaw(err)
}

// classifyRaw classifies an error that carries no *Error.
func classifyRaw(err error) Kind {
	var dnsErr *net.DNSError
	switch {
	case errors.Is(err, ErrLoop):
		return KindLoop
	case errors.Is(err, ErrBlocked):
		return KindBlocked
	case errors.Is(err, ErrUnspecified):
		return KindUnspecified
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return KindTimeout
	case errors.As(err, &dnsErr):
		if dnsErr.IsTimeout {
			return KindTimeout
		}
		return KindDNS
	case errors.Is(err, syscall.ECONNREFUSED):
		return KindRefused
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.EHOSTDOWN):
		return KindHostUnreachable
	case errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.ENETDOWN):
		return KindNetUnreachable
	case errors.Is(err, syscall.ETIMEDOUT):
		return KindTimeout
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return KindTimeout
	}
	return KindOther
}

// Redirect returns addr ("host:port") with its host replaced by host on the
// same port, or addr itself when host is "" (or addr has no port). It is the
// address a SafeSearch decision dials: the engine's enforcement host, while
// the client's bytes (TLS server name, Host header, QUIC) still name addr.
func Redirect(addr, host string) string {
	if host == "" {
		return addr
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return net.JoinHostPort(host, port)
}
