package proxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/sluiceproxy/sluice/filter"
	"github.com/sluiceproxy/sluice/proxy/relay"
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
	switch {
	case !ok:
		x.reason = "proxy authentication required"
	case !s.Auth.Authenticate(x.client, user, password):
		x.reason = "bad proxy credentials"
	default:
		return true
	}
	requireAuth(w)
	return false
}

// serveConnect serves CONNECT itself, in front of goproxy: it decides
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
	ctx, cancel := s.lifetime(r)
	defer cancel()
	origin, err := s.dial(s.guarded(ctx, x), d.Via, "tcp", dialAddr(t, d))
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
// head and splices client and origin until both are done. originPending
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
	st, err := relay.Splice(ctx, relay.WithPrefix(conn, pending), relay.WithPrefix(origin, originPending), s.idleTimeout())
	x.up, x.down = st.Up, st.Down
	if err != nil && !errors.Is(err, context.Canceled) {
		x.err = err
	}
}

// buffered copies the bytes the server read past the request's headers.
func buffered(br *bufio.Reader) []byte {
	if br == nil || br.Buffered() == 0 {
		return nil
	}
	b, _ := br.Peek(br.Buffered())
	return append([]byte(nil), b...)
}
