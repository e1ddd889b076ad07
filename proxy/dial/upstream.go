package dial

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
)

var (
	// ErrScheme means an upstream URL has a scheme Sluice cannot speak.
	ErrScheme = errors.New("dial: unsupported upstream scheme")
	// ErrUpstreamURL means an upstream URL lacks a host or has a bad port.
	ErrUpstreamURL = errors.New("dial: bad upstream url")
	// ErrNetwork means a network other than tcp was asked of an upstream.
	ErrNetwork = errors.New("dial: only tcp goes through an upstream")
	// ErrTarget means a target address cannot be sent to an upstream.
	ErrTarget = errors.New("dial: bad target address")
)

// aLongTimeAgo is a deadline in the past, to unblock I/O at once.
var aLongTimeAgo = time.Unix(1, 0)

// Options tunes one upstream hop made by FromURL. The zero value is ready
// to use.
type Options struct {
	// TLSConfig is used to reach an https upstream; it may carry a private
	// CA in RootCAs. Nil means the system roots. ServerName defaults to the
	// URL's host. The upstream's certificate is always verified.
	TLSConfig *tls.Config
	// Timeout bounds this hop's handshake (TLS, CONNECT, SOCKS), after
	// the connection to it is open. Zero means 10s.
	Timeout time.Duration
	// Route names the route for errors ("office"). Empty means unnamed.
	Route string

	// isolate, when set, gives this hop per-dial credentials (circuit
	// isolation); the URL must then carry none.
	isolate isolator
}

// FromURL wraps forward: the returned dialer reaches targets through the
// proxy at u, which forward dials. A nil forward means a zero *Direct.
// Chains are folds: FromURL(u2, FromURL(u1, direct, o), o) goes through u1,
// then u2, then to the target.
//
// Schemes:
//   - http: CONNECT to the upstream, Proxy-Authorization: Basic from the
//     URL's user info. Default port 80.
//   - https: the same over TLS to the upstream, verifying its certificate.
//     Default port 443.
//   - socks5, socks5h: SOCKS5 (RFC 1928) with username/password (RFC 1929)
//     from the user info. Both send a target name to the upstream
//     unresolved (remote DNS); socks5 does not resolve locally either.
//     Default port 1080.
//   - socks4a: SOCKS4a, the user name as its user id. A name goes to the
//     upstream unresolved. Default port 1080.
//
// Dials through the result never resolve the target name locally. When
// the upstream sends nothing before the target does, the connection
// returned over a plain-TCP first hop is the *net.TCPConn itself. Errors
// are *Error, naming the hop by its redacted URL.
func FromURL(u *url.URL, forward Dialer, opts Options) (Dialer, error) {
	if u == nil {
		return nil, fmt.Errorf("%w: nil", ErrUpstreamURL)
	}
	if forward == nil {
		forward = &Direct{}
	}
	scheme := strings.ToLower(u.Scheme)
	var defPort string
	switch scheme {
	case "http":
		defPort = "80"
	case "https":
		defPort = "443"
	case "socks5", "socks5h", "socks4a":
		defPort = "1080"
	default:
		return nil, fmt.Errorf("%w %q in %s", ErrScheme, u.Scheme, u.Redacted())
	}
	host := u.Hostname()
	if host == "" {
		return nil, fmt.Errorf("%w: %s: no host", ErrUpstreamURL, u.Redacted())
	}
	port := u.Port()
	if port == "" {
		port = defPort
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return nil, fmt.Errorf("%w: %s: bad port", ErrUpstreamURL, u.Redacted())
	}
	h := &hop{
		name:    u.Redacted(),
		addr:    net.JoinHostPort(host, port),
		n:       1,
		forward: forward,
		timeout: opts.Timeout,
		route:   opts.Route,
	}
	if h.timeout <= 0 {
		h.timeout = DefaultTimeout
	}
	if opts.isolate != nil {
		switch {
		case scheme == "socks4a":
			return nil, fmt.Errorf("%w: %s: isolation needs socks5, socks5h, http or https", ErrUpstreamURL, u.Redacted())
		case u.User != nil:
			return nil, fmt.Errorf("%w: %s: isolation sends its own credentials; this hop has a user", ErrUpstreamURL, u.Redacted())
		}
	}
	if fh, ok := forward.(*hop); ok {
		h.n = fh.n + 1
	}
	switch scheme {
	case "http", "https":
		hc := &httpConnect{iso: opts.isolate}
		if u.User != nil {
			hc.auth = basicAuth(u.User)
		}
		if scheme == "https" {
			hc.tls = tlsConfig(opts.TLSConfig, host)
		}
		h.proto = hc
	case "socks5", "socks5h":
		sc, err := newSOCKS5(h.addr, u.User)
		if err != nil {
			return nil, err
		}
		sc.iso, sc.addr = opts.isolate, h.addr
		h.proto = sc
	case "socks4a":
		s4 := &socks4a{}
		if u.User != nil {
			s4.userID = u.User.Username()
			if strings.IndexByte(s4.userID, 0) >= 0 {
				return nil, fmt.Errorf("%w: %s: user id holds a NUL", ErrUpstreamURL, u.Redacted())
			}
		}
		h.proto = s4
	}
	return h, nil
}

// tlsConfig clones base for a connection to an https upstream named host.
func tlsConfig(base *tls.Config, host string) *tls.Config {
	var c *tls.Config
	if base != nil {
		c = base.Clone()
	} else {
		c = &tls.Config{}
	}
	if c.ServerName == "" {
		c.ServerName = host
	}
	if c.MinVersion == 0 {
		c.MinVersion = tls.VersionTLS12
	}
	c.NextProtos = []string{"http/1.1"} // CONNECT is spoken over HTTP/1.1
	return c
}

// proto is the handshake one kind of upstream speaks over an open
// connection to it. It returns the connection to use for the target.
type proto interface {
	handshake(ctx context.Context, c net.Conn, network, addr string) (net.Conn, error)
}

// hopError is a handshake failure whose kind the protocol knows.
type hopError struct {
	kind  Kind
	fault bool // the hop itself failed, not the target
	err   error
}

func (e *hopError) Error() string { return e.err.Error() }
func (e *hopError) Unwrap() error { return e.err }

// hop is one upstream proxy in a chain.
type hop struct {
	name    string // redacted URL, for errors
	addr    string // host:port of the upstream
	n       int    // 1-based position in the chain
	forward Dialer // reaches addr
	timeout time.Duration
	route   string
	proto   proto
}

// DialContext connects to addr through the upstream.
func (h *hop) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return nil, &Error{Kind: KindOther, Addr: addr, Upstream: h.route, Hop: h.n, HopAddr: h.name,
			Err: fmt.Errorf("%w, not %q", ErrNetwork, network)}
	}
	if err := checkTarget(addr); err != nil {
		return nil, &Error{Kind: KindOther, Addr: addr, Upstream: h.route, Hop: h.n, HopAddr: h.name, Err: err}
	}
	c, err := h.forward.DialContext(ctx, "tcp", h.addr)
	if err != nil {
		return nil, h.reachErr(ctx, addr, err)
	}
	hctx, cancel := context.WithTimeout(ctx, h.timeout)
	defer cancel()
	stop := context.AfterFunc(hctx, func() { c.SetDeadline(aLongTimeAgo) })
	out, err := h.proto.handshake(hctx, c, network, addr)
	if !stop() && err == nil {
		// The deadline fired as the handshake ended: the conn is unusable.
		err = hctx.Err()
	}
	if err != nil {
		c.Close()
		return nil, h.fail(ctx, addr, err)
	}
	if err := c.SetDeadline(time.Time{}); err != nil {
		out.Close()
		return nil, h.fail(ctx, addr, err)
	}
	return out, nil
}

// reachErr wraps a failure to reach this hop through forward.
func (h *hop) reachErr(ctx context.Context, addr string, err error) error {
	var de *Error
	if errors.As(err, &de) && de.hopFault {
		// An earlier hop failed; it keeps the blame.
		e := *de
		e.Addr = addr
		if e.Upstream == "" {
			e.Upstream = h.route
		}
		return &e
	}
	inner := err
	if de != nil && de.HopAddr == "" && de.Err != nil {
		inner = de.Err // a direct dial: its own text says enough
	}
	return &Error{
		Kind: Classify(err), Addr: addr, Upstream: h.route, Hop: h.n, HopAddr: h.name,
		Err:      fmt.Errorf("reaching upstream %s: %w", h.addr, inner),
		hopFault: ctx.Err() == nil,
	}
}

// fail turns a handshake error into a *Error.
func (h *hop) fail(ctx context.Context, addr string, err error) error {
	kind, fault := KindUpstream, true
	var he *hopError
	if errors.As(err, &he) {
		kind, fault = he.kind, he.fault
	} else if k := classifyRaw(err); k == KindTimeout {
		kind = k
	}
	if cerr := ctx.Err(); cerr != nil {
		// The caller gave up; the hop is not to blame.
		fault = false
		kind = KindOther
		if errors.Is(cerr, context.DeadlineExceeded) {
			kind = KindTimeout
		}
		err = fmt.Errorf("%w (%v)", cerr, err)
	}
	return &Error{Kind: kind, Addr: addr, Upstream: h.route, Hop: h.n, HopAddr: h.name, Err: err, hopFault: fault}
}

// checkTarget rejects addresses that could not be sent safely: no port,
// or bytes that would break a CONNECT line or a SOCKS name.
func checkTarget(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrTarget, err)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("%w: bad port %q", ErrTarget, port)
	}
	if host == "" || len(host) > 255 {
		return fmt.Errorf("%w: bad host length", ErrTarget)
	}
	for i := 0; i < len(host); i++ {
		if b := host[i]; b <= ' ' || b == 0x7f {
			return fmt.Errorf("%w: control or space in host", ErrTarget)
		}
	}
	return nil
}
