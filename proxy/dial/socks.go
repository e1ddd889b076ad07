package dial

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"strconv"

	xproxy "golang.org/x/net/proxy"
)

// withConnDialer is the part of x/net's SOCKS5 dialer that runs the
// handshake over a connection we opened, so the connection handed back
// is ours (a *net.TCPConn over a direct first hop), not a wrapper.
type withConnDialer interface {
	DialWithConn(ctx context.Context, c net.Conn, network, address string) (net.Addr, error)
}

// socks5 is the handshake of a socks5 or socks5h upstream, run by
// golang.org/x/net/proxy. It sends a target name as a name (ATYP 0x03),
// so the upstream resolves it, for both schemes.
type socks5 struct {
	d    withConnDialer
	auth bool
	iso  isolator // per-dial credentials, or nil
	addr string   // the upstream's host:port
}

func newSOCKS5(addr string, user *url.Userinfo) (*socks5, error) {
	var auth *xproxy.Auth
	if user != nil {
		p, _ := user.Password()
		auth = &xproxy.Auth{User: user.Username(), Password: p}
	}
	xd, err := xproxy.SOCKS5("tcp", addr, auth, nil)
	if err != nil {
		return nil, fmt.Errorf("dial: socks5: %w", err)
	}
	wc, ok := xd.(withConnDialer)
	if !ok {
		return nil, errors.New("dial: socks5: x/net/proxy has no DialWithConn")
	}
	return &socks5{d: wc, auth: auth != nil}, nil
}

func (s *socks5) handshake(ctx context.Context, c net.Conn, network, addr string) (net.Conn, error) {
	d := s.d
	if s.iso != nil {
		per, err := newSOCKS5(s.addr, s.iso(ctx, addr))
		if err != nil {
			return nil, &hopError{kind: KindOther, err: err}
		}
		d = per.d
	}
	rc := &recordConn{Conn: c}
	if _, err := d.DialWithConn(ctx, rc, network, addr); err != nil {
		// x/net reports reply codes as text only: read them from the
		// bytes the upstream sent instead.
		if f, ok := parseSOCKS5Failure(rc.rec); ok {
			return nil, &hopError{kind: f.kind, fault: f.fault, err: fmt.Errorf("socks5: %s", f.text)}
		}
		return nil, fmt.Errorf("socks5 handshake: %w", err)
	}
	return c, nil
}

// recordConn keeps the first bytes read from a connection.
type recordConn struct {
	net.Conn
	rec []byte
}

const maxRecord = 600 // greeting, auth and a reply with a 255-byte name fit

func (c *recordConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if room := maxRecord - len(c.rec); room > 0 {
		c.rec = append(c.rec, p[:min(n, room)]...)
	}
	return n, err
}

// socksFailure is what a SOCKS server's replies said went wrong.
type socksFailure struct {
	kind  Kind
	fault bool // the upstream itself failed, rather than the target
	text  string
}

// SOCKS5 reply codes, RFC 1928 section 6.
const (
	socks5Succeeded          = 0x00
	socks5GeneralFailure     = 0x01
	socks5NotAllowed         = 0x02
	socks5NetUnreachable     = 0x03
	socks5HostUnreachable    = 0x04
	socks5ConnRefused        = 0x05
	socks5TTLExpired         = 0x06
	socks5CmdNotSupported    = 0x07
	socks5AddrTypeNotSupport = 0x08
)

// parseSOCKS5Failure reads what a SOCKS5 server sent during a failed
// handshake: the method choice, the RFC 1929 status if username/password
// was chosen, and the reply code. ok is false when the bytes end before
// they say anything (the I/O error then tells the story).
func parseSOCKS5Failure(rec []byte) (f socksFailure, ok bool) {
	if len(rec) < 2 {
		return f, false
	}
	if rec[0] != 0x05 {
		return socksFailure{KindUpstream, true, "not a socks5 server (version " + strconv.Itoa(int(rec[0])) + ")"}, true
	}
	method, rest := rec[1], rec[2:]
	switch method {
	case 0xff:
		return socksFailure{KindUpstreamAuth, true, "no acceptable authentication method"}, true
	case 0x02:
		if len(rest) < 2 {
			return f, false
		}
		if rest[1] != 0x00 {
			return socksFailure{KindUpstreamAuth, true, "username/password rejected"}, true
		}
		rest = rest[2:]
	case 0x00:
	default:
		return socksFailure{KindUpstream, true, "unsupported method " + strconv.Itoa(int(method))}, true
	}
	if len(rest) < 2 {
		return f, false
	}
	if rest[0] != 0x05 {
		return socksFailure{KindUpstream, true, "bad reply version " + strconv.Itoa(int(rest[0]))}, true
	}
	switch rest[1] {
	case socks5Succeeded:
		return socksFailure{KindUpstream, true, "malformed success reply"}, true
	case socks5NetUnreachable:
		return socksFailure{KindNetUnreachable, false, "network unreachable"}, true
	case socks5HostUnreachable:
		return socksFailure{KindHostUnreachable, false, "host unreachable"}, true
	case socks5ConnRefused:
		return socksFailure{KindRefused, false, "connection refused"}, true
	case socks5TTLExpired:
		return socksFailure{KindTimeout, false, "ttl expired"}, true
	case socks5GeneralFailure:
		return socksFailure{KindUpstream, false, "general failure"}, true
	case socks5NotAllowed:
		return socksFailure{KindUpstreamRefused, false, "connection not allowed by ruleset"}, true
	case socks5CmdNotSupported:
		return socksFailure{KindUpstream, false, "command not supported"}, true
	case socks5AddrTypeNotSupport:
		return socksFailure{KindUpstream, false, "address type not supported"}, true
	}
	return socksFailure{KindUpstream, false, "reply code " + strconv.Itoa(int(rest[1]))}, true
}

// socks4a is the handshake of a socks4a upstream.
type socks4a struct {
	userID string
}

// SOCKS4 codes (the SOCKS4 protocol and its SOCKS4A extension).
const (
	socks4Version       = 0x04
	socks4Connect       = 0x01
	socks4Granted       = 90 // request granted
	socks4Rejected      = 91 // request rejected or failed
	socks4NoIdentd      = 92 // rejected: cannot reach the client's identd
	socks4IdentMismatch = 93 // rejected: identd and user id differ
)

func (s *socks4a) handshake(_ context.Context, c net.Conn, _, addr string) (net.Conn, error) {
	req, err := socks4aRequest(addr, s.userID)
	if err != nil {
		return nil, &hopError{kind: KindOther, err: err}
	}
	if _, err := c.Write(req); err != nil {
		return nil, fmt.Errorf("socks4a: sending request: %w", err)
	}
	var reply [8]byte
	if _, err := io.ReadFull(c, reply[:]); err != nil {
		return nil, fmt.Errorf("socks4a: reading reply: %w", err)
	}
	if f, ok := parseSOCKS4Reply(reply[:]); !ok {
		return nil, &hopError{kind: f.kind, fault: f.fault, err: errors.New("socks4a: " + f.text)}
	}
	return c, nil
}

// socks4aRequest builds a CONNECT request. An IPv4 target is sent as its
// address; any other host (a name, an IPv6 literal) as a SOCKS4A name,
// for the upstream to resolve.
func socks4aRequest(addr, userID string) ([]byte, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrTarget, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 1 || port > 65535 {
		return nil, fmt.Errorf("%w: bad port %q", ErrTarget, portStr)
	}
	b := make([]byte, 0, 10+len(userID)+len(host))
	b = append(b, socks4Version, socks4Connect, byte(port>>8), byte(port))
	if ip, err := netip.ParseAddr(host); err == nil && ip.Unmap().Is4() {
		a := ip.Unmap().As4()
		b = append(b, a[:]...)
		b = append(b, userID...)
		return append(b, 0), nil
	}
	b = append(b, 0, 0, 0, 1) // 0.0.0.x: the name follows
	b = append(b, userID...)
	b = append(b, 0)
	b = append(b, host...)
	return append(b, 0), nil
}

// parseSOCKS4Reply reads the 8-byte reply to a SOCKS4(a) request. ok is
// true when the request was granted; otherwise f says why not.
func parseSOCKS4Reply(b []byte) (f socksFailure, ok bool) {
	if len(b) != 8 {
		return socksFailure{KindUpstream, true, "short reply"}, false
	}
	if b[0] != 0x00 && b[0] != socks4Version { // some servers echo 4
		return socksFailure{KindUpstream, true, "bad reply version " + strconv.Itoa(int(b[0]))}, false
	}
	switch b[1] {
	case socks4Granted:
		return socksFailure{}, true
	case socks4Rejected:
		return socksFailure{KindUpstream, false, "request rejected or failed"}, false
	case socks4NoIdentd:
		return socksFailure{KindUpstreamAuth, true, "rejected: identd unreachable"}, false
	case socks4IdentMismatch:
		return socksFailure{KindUpstreamAuth, true, "rejected: user id mismatch"}, false
	}
	return socksFailure{KindUpstream, true, "bad reply code " + strconv.Itoa(int(b[1]))}, false
}
