package proxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/sluiceproxy/sluice/filter"
	"github.com/sluiceproxy/sluice/proxy/accesslog"
	"github.com/sluiceproxy/sluice/proxy/dial"
	"github.com/sluiceproxy/sluice/proxy/observe"
	"github.com/sluiceproxy/sluice/proxy/relay"
	"github.com/sluiceproxy/sluice/proxy/sniff"
	"github.com/sluiceproxy/sluice/proxy/sniff/sniffpolicy"
)

// authenticate checks Proxy-Authorization when Auth is set; on failure it
// answers 407 and returns false. The header and the password are never
// logged.
func (s *Server) authenticate(x *exchange, w http.ResponseWriter, r *http.Request) bool {
	if s.Auth == nil {
		return true
	}
	user, password, ok := parseBasic(r.Header.Get("Proxy-Authorization"))
	x.user = user
	if !ok {
		x.reason = "proxy authentication required"
	} else if groups, good := s.Auth.Authenticate(x.client, user, password); good {
		x.groups = groups
		return true
	} else {
		x.reason = "bad proxy credentials"
	}
	requireAuth(w)
	return false
}

// serveConnect serves CONNECT: it decides
// before dialing, answers 403 without dialing when blocked, and otherwise
// hijacks the client's conn and splices the raw conns, bytes the client
// sent right behind its CONNECT first.
func (s *Server) serveConnect(x *exchange, w *countingWriter, r *http.Request) {
	x.target = r.Host
	if !s.authenticate(x, w, r) {
		return
	}
	t, err := s.parseTarget(r.Host, 0)
	if err != nil {
		x.reason, x.err = "bad target", err
		textError(w, http.StatusBadRequest, "sluice: CONNECT needs a host:port target")
		return
	}
	x.target = t.addr()
	d := s.decide(x, t.host, t.port)
	if d.Verdict != filter.Allow {
		s.refuseConnect(w, x, t, d)
		return
	}
	ctx := r.Context() // ServeHTTP's (detach): it outlives the handler when a tunnel takes over
	if s.Sniff.Wants(t.host) {
		if err := s.preflight(x, t.addr(), d); err != nil {
			x.err = err
			s.failDial(w, x, t.addr(), err)
			return
		}
		s.sniffTunnel(ctx, x, w, t.addr())
		return
	}
	origin, err := s.dial(s.guarded(ctx, x), d.Via, "tcp", dial.Redirect(t.addr(), d.Enforce))
	if err != nil {
		x.err = err
		s.failDial(w, x, t.addr(), err)
		return
	}
	head := func(w io.Writer) error {
		_, err := io.WriteString(w, "HTTP/1.1 200 Connection established\r\n\r\n")
		return err
	}
	s.tunnel(ctx, x, w, origin, nil, http.StatusOK, head)
}

// tunnel takes the client's connection over, writes the response head with
// head and hands client and origin to the relay (see handOff). originPending
// holds bytes already read from the origin. It owns origin from the start.
func (s *Server) tunnel(ctx context.Context, x *exchange, w http.ResponseWriter, origin net.Conn, originPending []byte, status int, head func(io.Writer) error) {
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		origin.Close()
		x.err = err
		textError(w, http.StatusInternalServerError, "sluice: cannot take over the connection")
		return
	}
	x.hijacked = true
	conn.SetDeadline(time.Time{}) // the server's header deadlines no longer apply
	pending := buffered(brw.Reader)
	if err := head(conn); err != nil {
		conn.Close()
		origin.Close()
		x.err = err
		return
	}
	x.status = status
	s.handOff(ctx, x, relay.WithPrefix(conn, pending), relay.WithPrefix(origin, originPending))
}

// handOff splices client and origin on the relay's own goroutines
// (relay.Start) and returns, so that the handler returns too: net/http then
// lets go of the request, its buffered reader and writer and the
// handler's stack. The tunnel keeps only its two sockets, two small
// goroutines (one of them, for a CONNECT served on the accepting worker,
// that worker: see relay.Inliner) and its access line (tunnelEnd), not
// the exchange: its end writes that line; ServeHTTP leaves it to it.
func (s *Server) handOff(ctx context.Context, x *exchange, client, origin net.Conn) {
	x.tunnel = true
	// The tunnel ends with the server's base context (WithBase) alone:
	// the request's context, and through it net/http's contexts of the
	// request and the connection, can go now.
	if base, ok := ctx.Value(baseKey{}).(context.Context); ok {
		x.cancel()
		x.cancel = func() {} // its closure holds the whole chain of contexts
		ctx = base
	}
	t := &tunnelEnd{s: s, rec: *x.record(), obs: x.access(), cancel: x.cancel}
	if t.rec.Method == http.MethodConnect {
		// r.Method is a piece of the request line, which it would keep.
		t.rec.Method = http.MethodConnect
	}
	relay.Start(ctx, client, origin, s.idleTimeout(), t.done)
}

// tunnelEnd is what a tunnel keeps until it ends: its access line and
// Observe report as they stood when it was handed off, short of what only
// its end knows (duration, bytes, error). An idle tunnel thus holds no
// exchange, request, decision or sniff outcome.
type tunnelEnd struct {
	s      *Server
	rec    accesslog.Record
	obs    observe.Access
	cancel func() // the request's context's, when it had no base context
}

// done is the tunnel's relay.Start callback: it writes the access line,
// reports it and ends the request's context, as exchange.end does.
func (t *tunnelEnd) done(st relay.Stats, err error) {
	t.rec.Duration = time.Since(t.rec.Start)
	t.rec.Up, t.rec.Down = st.Up, st.Down
	t.obs.Up, t.obs.Down = st.Up, st.Down
	if err != nil && !errors.Is(err, context.Canceled) {
		t.rec.Err = err
	}
	t.s.logRecord(&t.rec)
	if t.s.Observe != nil {
		t.s.Observe(t.obs)
	}
	t.cancel()
}

// preflight refuses, before a sniffed tunnel is answered 200, what the dial
// would refuse without connecting anywhere: an unspecified address, and on
// the direct route an IP-literal target that the Guard refuses (one of
// Sluice's own listeners, an address blocked under check_resolved or
// deny_private). Such a CONNECT thus gets the same 400 or 403 as an
// unsniffed one. A name is checked when it is dialed.
func (s *Server) preflight(x *exchange, addr string, d filter.Decision) error {
	if err := dial.Unspecified(addr); err != nil {
		return err
	}
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || s.Guard == nil || d.Route() != "direct" {
		return nil
	}
	rd, err := s.Guard(&x.req, &d, ap)
	if err != nil {
		x.refused.CompareAndSwap(nil, filter.OrBlock(rd))
	}
	return err
}

// sniffTunnel serves a CONNECT that the first decision allowed and whose
// first bytes are sniffed: it takes the connection over, answers 200,
// reads the client's first bytes and decides again with the name they
// carry (package sniffpolicy). A block cuts the connection: nothing is
// dialed and no byte is forwarded. Otherwise it dials addr, the address
// the client asked for, on the final decision's route and splices,
// forwarding the bytes read first. A dial that fails after the 200 can
// only cut the connection. A client that sent nothing within the wait is
// sniffed late, once dialed (sniffpolicy.Late). Every cut after the 200 is
// a RST (relay.Cut), as SOCKS does after its success reply: a tunnel the
// client was told is established must never look as if it ended cleanly.
func (s *Server) sniffTunnel(ctx context.Context, x *exchange, w http.ResponseWriter, addr string) {
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		x.err = err
		textError(w, http.StatusInternalServerError, "sluice: cannot take over the connection")
		return
	}
	x.hijacked = true
	conn.SetDeadline(time.Time{})
	pending := buffered(brw.Reader)
	if _, err := io.WriteString(conn, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		conn.Close()
		x.err = err
		return
	}
	x.status = http.StatusOK
	// The dial-time guard checks the address against the first request
	// and decision, never the sniffed name's: the client chose that name,
	// and it must not lift deny_private for the address it asked for.
	guarded := s.guarded(ctx, x)
	client := relay.WithPrefix(conn, pending) // sniffing may leave some of pending unread
	o := sniffpolicy.Check(client, s.Sniff, s.Policy, x.req, x.d)
	x.d, x.sniffed = o.Decision, o.LogAttrs()
	if o.Decision.Verdict != filter.Allow {
		relay.Cut(conn)
		return
	}
	// A search engine's sniffed name dials its SafeSearch enforcement host.
	origin, err := s.dial(guarded, o.Decision.Via, "tcp", dial.Redirect(addr, o.Decision.Enforce))
	if err != nil {
		relay.Cut(conn)
		x.err, x.dialErr = err, err
		return
	}
	var originData []byte
	if o.Result.Proto == sniff.None {
		o, originData = sniffpolicy.Late(ctx, client, origin, s.Sniff, s.Policy, x.req, o, s.idleTimeout())
		x.d, x.sniffed = o.Decision, o.LogAttrs()
		if o.Decision.Verdict != filter.Allow {
			relay.Cut(conn)
			relay.Cut(origin) // a cut tunnel: the origin sees an error, not the client's end
			return
		}
	}
	s.handOff(ctx, x, relay.WithPrefix(client, o.Result.Data), relay.WithPrefix(origin, originData))
}

// buffered copies the bytes the server read past the request's headers.
func buffered(br *bufio.Reader) []byte {
	if br == nil || br.Buffered() == 0 {
		return nil
	}
	b, _ := br.Peek(br.Buffered())
	return append([]byte(nil), b...)
}
