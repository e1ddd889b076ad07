package dial

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// DefaultTimeout bounds a direct dial, or one hop's handshake, when no
// timeout is configured.
const DefaultTimeout = 10 * time.Second

// minAttempt is the least time one address of several gets when a direct
// dial splits its timeout between addresses.
const minAttempt = 2 * time.Second

// Direct dials origins itself. It is the first dialer of every chain: with
// an upstream set, it only ever dials the upstream's own address, so a
// destination name never reaches the local resolver.
//
// The zero value is ready to use. A *Direct is safe for concurrent use
// once its fields are set.
type Direct struct {
	// Timeout bounds one dial, lookup included. Zero means 10s.
	Timeout time.Duration
	// Hosts overrides names like /etc/hosts: normalized name (lower case,
	// no trailing dot) -> addresses, tried in order. Nil means no overrides.
	Hosts map[string][]netip.Addr
	// LookupHook resolves names that are neither IP literals nor in Hosts.
	// Nil means Go's own resolver (net.Resolver with PreferGo), never the
	// C library's: names like "0x7f000002", which glibc reads as addresses,
	// then stay names. Tests count lookups through it.
	LookupHook func(ctx context.Context, host string) ([]netip.Addr, error)
	// KeepAlive is the TCP keep-alive period of the sockets it dials. Zero
	// or negative means none: a tunnel's idle timeout ends silent tunnels
	// already, and Go's default (15s) costs four setsockopt(2) calls per
	// connection.
	KeepAlive time.Duration
}

// DialContext connects to addr ("host:port") on network ("tcp", "tcp4",
// "tcp6"; other networks are passed to net.Dialer as they are). For tcp the
// connection is a *net.TCPConn, so splice and half-close work. A failure
// is a *Error whose Kind says what went wrong.
func (d *Direct) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return d.dialChecked(ctx, network, addr, nil, false)
}

// dialOrigin dials the final hop to an origin: like DialContext, but an
// unspecified address is never dialed, and each address the name resolves
// to passes check (when not nil) before it is dialed. A refused address is
// skipped; when every address was refused, the dial fails with the first
// refusal (KindLoop, KindBlocked or KindUnspecified). The addresses are
// resolved once, and the address checked is the address dialed.
func (d *Direct) dialOrigin(ctx context.Context, network, addr string, check Check) (net.Conn, error) {
	return d.dialChecked(ctx, network, addr, check, true)
}

func (d *Direct) dialChecked(ctx context.Context, network, addr string, check Check, origin bool) (net.Conn, error) {
	c, err := d.dial(ctx, network, addr, check, origin)
	if err != nil {
		kind := classifyRaw(err)
		if kind == KindOther && ctx.Err() != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
			kind = KindTimeout
		}
		return nil, &Error{Kind: kind, Addr: addr, Err: err}
	}
	return c, nil
}

func (d *Direct) dial(ctx context.Context, network, addr string, check Check, origin bool) (net.Conn, error) {
	timeout := d.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	if dl, ok := ctx.Deadline(); !ok || time.Until(dl) > timeout {
		// A caller's earlier deadline (a front end's dial timeout) bounds
		// the dial already: no second context and timer for it.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}

	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	addrs, err := d.resolve(ctx, network, host)
	if err != nil {
		return nil, err
	}
	// An IPv4 literal is dialed as the caller wrote it: netip accepts
	// only the canonical dotted form, which net parses to the same
	// address, so the address checked is still the address dialed,
	// without formatting it again.
	ip, perr := netip.ParseAddr(host)
	literal4 := perr == nil && ip.Is4()
	if origin {
		if addrs, err = vet(addrs, port, check); err != nil {
			return nil, err
		}
	}
	nd := net.Dialer{KeepAlive: -1}
	if d.KeepAlive > 0 {
		nd.KeepAlive = d.KeepAlive
	}
	var first error
	for i, a := range addrs {
		actx := ctx
		if left := len(addrs) - i; left > 1 {
			// Give each remaining address a share of the time left, as
			// net.Dialer does, so one black hole cannot use it all.
			if dl, ok := ctx.Deadline(); ok {
				share := max(time.Until(dl)/time.Duration(left), minAttempt)
				var acancel context.CancelFunc
				actx, acancel = context.WithTimeout(ctx, share)
				defer acancel()
			}
		}
		// Not net.Dialer.DialTCP with the netip.AddrPort: with no local
		// address it binds the socket to 0.0.0.0:0 before connecting (one
		// more system call, and bind-before-connect reserves an ephemeral
		// port per socket rather than per destination).
		target := addr
		if !literal4 || len(addrs) > 1 {
			target = net.JoinHostPort(a.String(), port)
		}
		c, err := nd.DialContext(actx, network, target)
		if err == nil {
			return c, nil
		}
		if first == nil {
			first = err
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, first
}

// Lookup resolves host as a dial would, without dialing: an IP literal as
// it is, then Hosts, then LookupHook or Go's own resolver. It is for
// explaining (`sluice check`); a dial resolves once and checks what it
// dials.
func (d *Direct) Lookup(ctx context.Context, host string) ([]netip.Addr, error) {
	timeout := d.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return d.resolve(ctx, "tcp", host)
}

// vet drops the addresses that must not be dialed: unspecified ones, and
// those check refuses. When none is left it returns the first refusal.
func vet(addrs []netip.Addr, port string, check Check) ([]netip.Addr, error) {
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("dial: bad port %q", port)
	}
	out := addrs[:0] // addrs is resolve's own slice: filtered in place
	var first error
	for _, a := range addrs {
		var err error
		if a.IsUnspecified() {
			err = fmt.Errorf("%w %s", ErrUnspecified, a)
		} else if check != nil {
			err = check(netip.AddrPortFrom(a, uint16(p)))
		}
		if err == nil {
			out = append(out, a)
		} else if first == nil {
			first = err
		}
	}
	if len(out) == 0 {
		return nil, first
	}
	return out, nil
}

// resolver is Go's own resolver: it reads /etc/hosts, /etc/resolv.conf and
// asks DNS itself, whatever nsswitch.conf, RES_OPTIONS, HOSTALIASES or
// GODEBUG=netdns=cgo say, so that no C library turns a name into an
// address behind the rules' back.
var resolver = &net.Resolver{PreferGo: true}

// resolve turns host into the addresses to try, in order: an IP literal
// as it is, then Hosts, then LookupHook or the system resolver.
func (d *Direct) resolve(ctx context.Context, network, host string) ([]netip.Addr, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{ip.Unmap()}, nil
	}
	name := strings.TrimSuffix(strings.ToLower(host), ".")
	addrs, ok := d.Hosts[name]
	if !ok {
		var err error
		if d.LookupHook != nil {
			addrs, err = d.LookupHook(ctx, name)
		} else {
			addrs, err = resolver.LookupNetIP(ctx, "ip", name)
		}
		if err != nil {
			return nil, err
		}
	}
	out := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		a = a.Unmap()
		switch {
		case !a.IsValid():
		case network == "tcp4" || network == "udp4":
			if a.Is4() {
				out = append(out, a)
			}
		case network == "tcp6" || network == "udp6":
			if a.Is6() {
				out = append(out, a)
			}
		default:
			out = append(out, a)
		}
	}
	if len(out) == 0 {
		return nil, &net.DNSError{Err: "no suitable address", Name: host, IsNotFound: true}
	}
	return out, nil
}
