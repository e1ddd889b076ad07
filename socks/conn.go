package socks

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluiceproxy/sluice/filter"
	"github.com/sluiceproxy/sluice/proxy/accesslog"
	"github.com/sluiceproxy/sluice/proxy/dial"
	"github.com/sluiceproxy/sluice/proxy/relay"
	"github.com/sluiceproxy/sluice/proxy/reqid"
	"github.com/sluiceproxy/sluice/proxy/sniff"
	"github.com/sluiceproxy/sluice/proxy/sniff/sniffpolicy"
	"github.com/sluiceproxy/sluice/rules"
)

// access collects what the access line of one connection reports.
type access struct {
	id       string // the request id (reqid), unique across both front ends
	proto    string // "socks5", "socks4", "socks4a"
	cmd      string // "connect", "udp", "bind", ...
	user     string
	groups   []string // the SOCKS5 user's directory groups, from Auth
	target   string
	decision *filter.Decision
	sniffed  []slog.Attr // what sniffing found
	reply    int         // the reply code sent, -1 when none
	up, down int64       // bytes client→origin and origin→client
	udpBlock int64       // UDP datagrams dropped by the policy
	udpDrop  int64       // UDP datagrams dropped for other reasons
	granted  bool        // the request was granted (reply "succeeded")
	// succeeded is set just before the reply "succeeded" is sent; read by
	// the goroutine that closes the connection when the server stops.
	succeeded atomic.Bool
	peer      netip.Addr // the origin's address, for a direct connection
	route     string     // the failover member that carried it ("pool/member"), or ""
	err       error
	dialErr   error           // the dial that failed, for Observe
	pending   []byte          // failure reply to send if the handler panics
	tunnel    bool            // a tunnel took the connection over and ends it
	end       func()          // ends the connection: closes it, logs it
	release   func()          // ends its context and the AfterFuncs on it, once; nil after
	stopConn  func() bool     // stops closing the connection when its context ends
	shared    context.Context // the context the server's connections share (see tunnelCtx), or nil
}

// noteRoute returns ctx noting, in a.route, the failover member that
// carries the dial (the dial runs on a's goroutine).
func (a *access) noteRoute(ctx context.Context) context.Context {
	return dial.WithRouteNote(ctx, func(route string) { a.route = route })
}

// serve runs one connection from its first byte to the access line. A
// connection that becomes a tunnel is ended by the tunnel (see tunnel),
// after serve returned; otherwise serve ends it. Ending it closes c,
// writes the access line and releases the server's count of it (s.wg).
func (s *Server) serve(ctx context.Context, c net.Conn) {
	start := time.Now()
	a := &access{id: reqid.New(), proto: "socks", reply: -1, shared: s.tunnelCtx(ctx)}
	if shared := a.shared; shared != nil {
		// The context shared by the connections served under parent ends
		// when parent or the server does, as a context of the connection's
		// own would: one AfterFunc instead of a context and two AfterFuncs
		// per connection.
		ctx = shared
		a.stopConn = context.AfterFunc(ctx, func() { a.close(c) })
		a.release = func() { a.stopConn() }
	} else {
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		stopServer := context.AfterFunc(s.ctx, cancel)
		stopConn := context.AfterFunc(ctx, func() { a.close(c) })
		a.stopConn = stopConn
		a.release = func() {
			stopConn()
			stopServer()
			cancel()
		}
	}
	s.stats.conns.Add(1)
	a.end = func() {
		if a.release != nil {
			a.release()
			a.release = nil
		}
		c.Close()
		s.logAccess(c, a, start)
		s.observe(a)
		s.wg.Done()
	}
	defer func() {
		if p := recover(); p != nil {
			a.err = fmt.Errorf("socks: panic: %v", p)
			if a.pending != nil {
				c.SetWriteDeadline(time.Now().Add(time.Second))
				c.Write(a.pending)
			}
		}
		if !a.tunnel {
			a.end()
		}
	}()

	c.SetDeadline(time.Now().Add(s.handshakeTimeout()))
	r := handshakeReader(c)
	v, err := r.Peek(1)
	if err != nil {
		a.err = fmt.Errorf("socks: handshake: %w", err)
		return
	}
	switch v[0] {
	case socks5Version:
		a.proto = "socks5"
		s.serve5(ctx, c, r, a)
	case socks4Version:
		a.proto = "socks4"
		s.serve4(ctx, c, r, a)
	default:
		a.err = ErrVersion
	}
}

// handshakeBufSize is the buffer a handshake is read through: a whole
// greeting, RFC 1929 request or SOCKS5 request fits, so each step costs
// one read(2) instead of one per field.
const handshakeBufSize = 1024

// handshakeReaders are the buffers handshakes are read through, back in
// the pool once the request is read (see afterHandshake).
var handshakeReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, handshakeBufSize) }}

// handshakeReader returns a pooled reader of c for its handshake.
func handshakeReader(c net.Conn) *bufio.Reader {
	r := handshakeReaders.Get().(*bufio.Reader)
	r.Reset(c)
	return r
}

// afterHandshake returns c as the tunnel reads it: first the bytes r read
// past the request (a client may send its first data right behind it;
// none is lost), then c itself. r goes back to the pool and must not be
// used again.
func afterHandshake(c net.Conn, r *bufio.Reader) net.Conn {
	var rest []byte
	if n := r.Buffered(); n > 0 {
		b, _ := r.Peek(n)
		rest = append([]byte(nil), b...)
	}
	r.Reset(nil)
	handshakeReaders.Put(r)
	return relay.WithPrefix(c, rest)
}

func (s *Server) serve5(ctx context.Context, c net.Conn, r *bufio.Reader, a *access) {
	methods, err := readGreeting(r)
	if err != nil {
		a.err = fmt.Errorf("socks: greeting: %w", err)
		return
	}
	want := byte(methodNoAuth)
	if s.Auth != nil {
		want = methodUserPass
	}
	if bytes.IndexByte(methods, want) < 0 {
		c.Write([]byte{socks5Version, methodNoAcceptable})
		a.err = ErrNoMethod
		return
	}
	if _, err := c.Write([]byte{socks5Version, want}); err != nil {
		a.err = fmt.Errorf("socks: greeting: %w", err)
		return
	}
	if s.Auth != nil {
		user, password, err := readUserPass(r)
		if err != nil {
			a.err = fmt.Errorf("socks: auth: %w", err)
			return
		}
		a.user = user
		groups, ok := s.Auth.Authenticate(clientAddr(c), user, password)
		if !ok {
			c.Write([]byte{authVersion, authFailure})
			a.err = ErrAuth
			return
		}
		a.groups = groups
		if _, err := c.Write([]byte{authVersion, authSuccess}); err != nil {
			a.err = fmt.Errorf("socks: auth: %w", err)
			return
		}
	}
	req, err := readRequest(r)
	a.cmd = cmdName(req.cmd)
	if err != nil {
		a.err = fmt.Errorf("socks: request: %w", err)
		if req.host != "" {
			a.target = req.addr()
		}
		switch {
		case errors.Is(err, ErrCommand):
			s.reply5(c, a, repCommandNotSupported, netip.AddrPort{})
		case errors.Is(err, ErrAddrType):
			s.reply5(c, a, repAddrTypeNotSupported, netip.AddrPort{})
		case errors.Is(err, ErrVersion), errors.Is(err, ErrAddress):
			s.reply5(c, a, repGeneralFailure, netip.AddrPort{})
		}
		return
	}
	c = afterHandshake(c, r)
	if req.cmd == cmdUDPAssociate {
		s.associate(ctx, c, req, a)
		return
	}
	s.connect(ctx, c, req, a, func(code replyCode, bound netip.AddrPort) {
		s.reply5(c, a, code, bound)
	})
}

func (s *Server) serve4(ctx context.Context, c net.Conn, r *bufio.Reader, a *access) {
	req, err := readSocks4(r)
	a.cmd = cmdName(req.cmd)
	if req.name {
		a.proto = "socks4a"
	}
	reply := func(code replyCode, bound netip.AddrPort) {
		cd := byte(socks4Rejected)
		if code == repSucceeded {
			cd = socks4Granted
		}
		a.reply = int(cd)
		c.Write(reply4(cd, bound))
	}
	if err != nil {
		a.err = fmt.Errorf("socks: request: %w", err)
		if req.host != "" {
			a.target = req.addr()
		}
		if errors.Is(err, ErrCommand) || errors.Is(err, ErrAddress) || errors.Is(err, ErrTooLong) {
			reply(repCommandNotSupported, netip.AddrPort{})
		}
		return
	}
	if s.Auth != nil {
		// A SOCKS4 user id is not a password: refuse while auth is on.
		a.target = req.addr()
		a.err = ErrAuth
		reply(repNotAllowed, netip.AddrPort{})
		return
	}
	c = afterHandshake(c, r)
	s.connect(ctx, c, req, a, reply)
}

func (s *Server) reply5(c net.Conn, a *access, code replyCode, bound netip.AddrPort) error {
	a.reply = int(code)
	_, err := c.Write(reply5(code, bound))
	return err
}

// connect serves CONNECT: decide, dial, reply, splice.
func (s *Server) connect(ctx context.Context, c net.Conn, req request, a *access, reply func(replyCode, netip.AddrPort)) {
	// Until the reply is sent, a panic answers "general failure".
	a.pending = reply5(repGeneralFailure, netip.AddrPort{})
	if a.proto != "socks5" {
		a.pending = reply4(socks4Rejected, netip.AddrPort{})
	}
	host, err := rules.NormalizeHost(req.host)
	if err != nil {
		a.target = req.addr()
		a.err = fmt.Errorf("socks: target: %w", err)
		reply(repHostUnreachable, netip.AddrPort{})
		return
	}
	a.target = net.JoinHostPort(host, strconv.Itoa(int(req.port)))
	freq := filter.Request{Client: clientAddr(c), User: a.user, Groups: a.groups, Host: host, Port: req.port, Time: s.now()}
	d := s.decide(freq)
	a.decision = &d
	if d.Verdict != filter.Allow {
		s.stats.blocked.Add(1)
		reply(repNotAllowed, netip.AddrPort{})
		return
	}
	if s.Sniff.Wants(host) {
		if rd, err := s.preflight(freq, d, a.target); err != nil {
			a.err = err
			if rd != nil { // the guard refused: a block
				a.decision = rd
				s.stats.blocked.Add(1)
				reply(repNotAllowed, netip.AddrPort{})
				return
			}
			s.stats.failed.Add(1)
			a.dialErr = err
			reply(replyFor(err), netip.AddrPort{})
			return
		}
		s.sniffConnect(ctx, c, a, freq, d, reply)
		return
	}
	var refused atomic.Pointer[filter.Decision]
	origin, err := s.dial(a.noteRoute(s.guarded(ctx, freq, d, &refused)), d.Via, "tcp", dial.Redirect(a.target, d.Enforce))
	if err != nil {
		a.err = err
		if rd := refused.Load(); rd != nil {
			// The guard refused the address: a block, whatever error the
			// dial ended with.
			a.decision = rd
			s.stats.blocked.Add(1)
			reply(repNotAllowed, netip.AddrPort{})
			return
		}
		s.stats.failed.Add(1)
		a.dialErr = err
		reply(replyFor(err), netip.AddrPort{})
		return
	}
	c.SetDeadline(time.Time{})
	a.granted = true
	if d.Route() == "direct" || strings.HasSuffix(a.route, "/"+dial.RouteDirect) {
		a.peer = addrPort(origin.RemoteAddr()).Addr().Unmap()
	}
	a.succeeded.Store(true)
	reply(repSucceeded, addrPort(origin.LocalAddr()))
	a.pending = nil
	s.tunnel(ctx, a, c, origin)
}

// close ends c when the server or its parent stops it before a tunnel
// took it over. Once the client is told "succeeded", it is cut (a RST):
// a tunnel must never look as if it ended cleanly.
func (a *access) close(c net.Conn) {
	if a.succeeded.Load() {
		relay.Cut(c)
		return
	}
	c.Close()
}

// tunnel hands c and origin to relay.Start: the goroutine that served the
// handshake returns and frees its stack (or, on a worker that takes a
// direction of the tunnel, carries it: relay.Inliner), and the tunnel's
// goroutines end the connection (a.end) when it is done.
func (s *Server) tunnel(ctx context.Context, a *access, c, origin net.Conn) {
	a.tunnel = true
	if shared := a.shared; shared != nil {
		// The connection's context, its cancel func and the AfterFuncs
		// on it go now; the shared context ends the tunnel as it would.
		a.release()
		a.release, a.stopConn = nil, nil
		ctx = shared
	} else {
		a.stopConn() // the relay resets both conns when ctx ends
	}
	if a.decision != nil {
		// It may point into a sniff outcome, whose 2 KiB buffer would
		// then live as long as the tunnel.
		d := *a.decision
		a.decision = &d
	}
	relay.Start(ctx, c, origin, s.idleTimeout(), func(st relay.Stats, err error) {
		a.up, a.down = st.Up, st.Down
		if err != nil {
			a.err = err
		}
		a.end()
	})
}

// preflight refuses, before a sniffed tunnel is answered success, what the
// dial would refuse without connecting anywhere: an unspecified address,
// and on the direct route an IP-literal target that the Guard refuses (one
// of Sluice's own listeners, an address blocked under check_resolved or
// deny_private), with the Guard's refusing decision. Such a request thus
// gets the same reply (0x04, 0x02) as an unsniffed one. A name is checked
// when it is dialed.
func (s *Server) preflight(req filter.Request, d filter.Decision, addr string) (*filter.Decision, error) {
	if err := dial.Unspecified(addr); err != nil {
		return nil, err
	}
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || s.Guard == nil || d.Route() != "direct" {
		return nil, nil
	}
	rd, err := s.Guard(&req, &d, ap)
	if err != nil {
		return filter.OrBlock(rd), err
	}
	return nil, nil
}

// sniffConnect serves a CONNECT that the first decision d allowed and whose
// first bytes are sniffed: it replies success (bound address 0.0.0.0:0,
// since nothing is dialed yet), reads the client's first bytes and decides
// again with the name they carry (package sniffpolicy). A block cuts the
// connection (a RST, as every end after the success reply that is not
// the tunnel's): nothing is dialed and no byte is forwarded. Otherwise it
// dials the target the client asked for on the final decision's route and
// splices, forwarding the bytes read first. A dial that fails after the
// success reply can only cut the connection. A client that sent nothing
// within the wait is sniffed late, once dialed (sniffpolicy.Late).
func (s *Server) sniffConnect(ctx context.Context, c net.Conn, a *access, req filter.Request, d filter.Decision, reply func(replyCode, netip.AddrPort)) {
	// sniff.Read sets the read deadline of its wait and clears it.
	c.SetWriteDeadline(time.Time{})
	a.succeeded.Store(true)
	reply(repSucceeded, netip.AddrPort{})
	a.pending = nil
	tunneled := false
	defer func() {
		if !tunneled { // told "succeeded": a refusal now is a cut (a RST), never a clean end
			relay.Cut(c)
		}
	}()
	o := sniffpolicy.Check(c, s.Sniff, s.Policy, req, d)
	a.decision, a.sniffed = &o.Decision, o.LogAttrs()
	if o.Decision.Verdict != filter.Allow {
		s.stats.blocked.Add(1)
		return
	}
	// The dial-time guard checks the address against the first request
	// and decision, never the sniffed name's: the client chose that name,
	// and it must not lift deny_private for the address it asked for.
	var refused atomic.Pointer[filter.Decision]
	// A search engine's sniffed name dials its SafeSearch enforcement host.
	origin, err := s.dial(a.noteRoute(s.guarded(ctx, req, d, &refused)), o.Decision.Via, "tcp", dial.Redirect(a.target, o.Decision.Enforce))
	if err != nil {
		a.err = err
		if rd := refused.Load(); rd != nil {
			a.decision = rd
			s.stats.blocked.Add(1)
			return
		}
		s.stats.failed.Add(1)
		a.dialErr = err
		return
	}
	var originData []byte
	if o.Result.Proto == sniff.None {
		o, originData = sniffpolicy.Late(ctx, c, origin, s.Sniff, s.Policy, req, o, s.idleTimeout())
		a.decision, a.sniffed = &o.Decision, o.LogAttrs()
		if o.Decision.Verdict != filter.Allow {
			s.stats.blocked.Add(1)
			relay.Cut(origin) // a cut tunnel: the origin sees an error, not the client's end
			return
		}
	}
	tunneled = true
	s.tunnel(ctx, a, relay.WithPrefix(c, o.Result.Data), relay.WithPrefix(origin, originData))
}

func cmdName(cmd byte) string {
	switch cmd {
	case cmdConnect:
		return "connect"
	case cmdBind:
		return "bind"
	case cmdUDPAssociate:
		return "udp"
	}
	return "0x" + strconv.FormatUint(uint64(cmd), 16)
}

// logAccess writes the one access line of a connection. It never logs a password.
func (s *Server) logAccess(c net.Conn, a *access, start time.Time) {
	if s.Access == nil && s.Logger == nil {
		return
	}
	r := &accesslog.Record{
		ID: a.id, Start: start, Duration: time.Since(start),
		Client: c.RemoteAddr().String(), Proto: a.proto, Cmd: a.cmd,
		Target: a.target, User: a.user, Reply: a.reply, Granted: a.granted,
		Up: a.up, Down: a.down, UDPBlocked: a.udpBlock, UDPDropped: a.udpDrop,
		Peer: a.peer, Err: a.err,
	}
	if errors.Is(a.err, ErrAuth) {
		r.Status = 407
	}
	if d := a.decision; d != nil {
		r.Decided = true
		r.Verdict, r.Reason, r.Rule = d.Verdict.String(), d.Reason, d.RuleName()
		r.Category, r.Route = d.Category, d.Route()
		if a.route != "" && r.Route != "" {
			r.Route = a.route
		}
		r.Sniffed = a.sniffed
		r.SafeSearch = d.Enforce
		if d.WouldBlock {
			r.WouldBlock, r.WouldBlockRule = true, d.Report.String()
		}
	}
	if s.Access != nil {
		s.Access(r)
		return
	}
	accesslog.LogJSON(s.Logger, r)
}
