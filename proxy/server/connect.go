package server

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/sluiceproxy/sluice/proxy"
)

// serveConnect serves a connection that opens with a CONNECT whose whole
// request head came in its first read (peek), on the worker goroutine
// that accepted it, through the same handler as the HTTP server's
// requests (serveHTTP, then the state's proxy.Server). It skips what the
// http.Server costs a tunnel: the hand-off to its accept loop, a new
// goroutine (and its stack's growth), its buffers, contexts and
// background read, and the deadlines it sets and clears on hijack.
//
// It returns false, having consumed nothing, for anything else: another
// method, a head not whole in the first read, a request net/http would
// answer itself (a bad Host header, a body, Expect, a protocol other than
// HTTP/1.x); the HTTP server then serves the connection as before. A
// CONNECT the handler answers without a tunnel (403, 407, 502...) gets the
// response net/http would write, and the connection goes on to the HTTP
// server for its next request unless the request or response closes it.
func (s *Server) serveConnect(c *conn) bool {
	head := c.prefix
	end := bytes.Index(head, headEnd)
	if end < 0 || !bytes.HasPrefix(head, connectPrefix) {
		return false
	}
	r := readConnect(head[:end+len(headEnd)])
	if r == nil {
		return false
	}
	rest := head[end+len(headEnd):]
	if len(rest) == 0 {
		rest = nil
	}
	c.prefix = rest // bytes the client sent behind its CONNECT go to the tunnel
	c.SetReadDeadline(time.Time{})
	r.RemoteAddr = c.RemoteAddr().String()
	r = r.WithContext(s.connectBase())
	w := &connectWriter{c: c}
	s.serveHTTP(w, r)
	if w.hijacked {
		return true
	}
	if keep := w.finish(r, s.isStopping()); !keep {
		c.Close()
		return true
	}
	c.SetReadDeadline(time.Time{})
	s.toHTTP(c)
	return true
}

var (
	headEnd       = []byte("\r\n\r\n")
	connectPrefix = []byte("CONNECT ")
)

// connectBase is the context of a CONNECT served by serveConnect: the
// server's base, as the HTTP servers give their requests (proxy.WithBase).
func (s *Server) connectBase() context.Context {
	s.baseOnce.Do(func() { s.httpBase = proxy.WithBase(s.base) })
	return s.httpBase
}

// headReaders parse CONNECT heads.
var headReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, peekSize) }}

// readConnect parses head, a whole CONNECT request head, with net/http's
// own parser and applies the checks the http.Server adds to it. It
// returns nil for anything the HTTP server should see instead, among
// them a head with an obs-fold line (hasObsFold) and a head the parser
// ends before its last byte: one whose lines end
// in a bare LF ends at the first empty line, and what follows it (up to
// the CRLF CRLF that was taken for the end) is the tunnel's.
func readConnect(head []byte) *http.Request {
	r, _ := readHead(head)
	if r == nil || r.Method != http.MethodConnect {
		return nil
	}
	return r
}

// readHead parses a whole request head as net/http's server would before
// calling its handler, and returns nil for one it would answer itself or
// that a worker leaves to it: an obs-fold line, a parse error, bytes
// after the head, a protocol other than HTTP/1.x, a body (a length other
// than 0, a Transfer-Encoding, an Expect), a malformed Host header, an
// invalid header name or value. hasHost says whether a Host header was
// there (HTTP/1.1 requires one of a request other than CONNECT).
func readHead(head []byte) (r *http.Request, hasHost bool) {
	if hasObsFold(head) {
		return nil, false
	}
	rd := bytes.NewReader(head)
	br := headReaders.Get().(*bufio.Reader)
	br.Reset(rd)
	r, err := http.ReadRequest(br)
	whole := br.Buffered() == 0 && rd.Len() == 0
	br.Reset(nil)
	headReaders.Put(br)
	if err != nil || !whole || r.ProtoMajor != 1 {
		return nil, false
	}
	if r.ContentLength != 0 || len(r.TransferEncoding) > 0 || len(r.Header["Expect"]) > 0 {
		return nil, false
	}
	// http.ReadRequest drops the Host header (net/http's server checks it
	// first, then drops it); it refused a second one already.
	host, hasHost := hostHeader(head)
	if hasHost && !httpguts.ValidHostHeader(host) {
		return nil, false
	}
	for k, vv := range r.Header {
		if !httpguts.ValidHeaderFieldName(k) {
			return nil, false
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return nil, false
			}
		}
	}
	return r, hasHost
}

// hasObsFold reports whether head has an obs-fold line (one that starts
// with a space or a tab): the parser joins it to the line above, which
// hostHeader does not, so that "Host: x\r\n y" would pass as "x" where
// net/http's server checks "x y" and answers 400. Such a head goes to the
// HTTP server.
func hasObsFold(head []byte) bool {
	return bytes.Contains(head, foldSpace) || bytes.Contains(head, foldTab)
}

// hostHeader returns the value of the Host header line of head, a request
// head http.ReadRequest accepted, as net/textproto reads it: lines end in
// LF with an optional CR before it, the value without the spaces and tabs
// around it.
func hostHeader(head []byte) (string, bool) {
	_, rest, _ := bytes.Cut(head, []byte("\n")) // the request line
	for len(rest) > 0 {
		var line []byte
		line, rest, _ = bytes.Cut(rest, []byte("\n"))
		line = bytes.TrimSuffix(line, []byte("\r"))
		if len(line) > 5 && line[4] == ':' && bytes.EqualFold(line[:4], []byte("host")) {
			return string(bytes.Trim(line[5:], " \t")), true
		}
	}
	return "", false
}

// isStopping reports whether a shutdown began.
func (s *Server) isStopping() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopping
}

// toHTTP hands c to the HTTP server of the current timeouts, or closes it
// once the grace period is over.
func (s *Server) toHTTP(c *conn) {
	for {
		g := s.httpServer(s.state.Load().cfg.Timeouts)
		if g == nil { // the grace period is over
			c.Close()
			return
		}
		if g.ln.push(s.base, c) {
			return
		}
	}
}

// connectWriter is the http.ResponseWriter of a CONNECT served by
// serveConnect. Hijack hands the connection over (a tunnel); anything
// else the handler writes is kept and sent whole by finish.
type connectWriter struct {
	c        *conn
	header   http.Header
	status   int
	body     bytes.Buffer
	hijacked bool
}

func (w *connectWriter) Header() http.Header {
	if w.header == nil {
		w.header = http.Header{}
	}
	return w.header
}

func (w *connectWriter) WriteHeader(code int) {
	if w.status == 0 && !w.hijacked {
		w.status = code
	}
}

func (w *connectWriter) Write(p []byte) (int, error) {
	if w.hijacked {
		return 0, http.ErrHijacked
	}
	w.WriteHeader(http.StatusOK)
	return w.body.Write(p)
}

// Flush does nothing: the response goes out whole when the handler ends.
func (w *connectWriter) Flush() {}

// Hijack implements http.Hijacker: the conn reads first what the client
// sent behind its request head.
func (w *connectWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.hijacked {
		return nil, nil, http.ErrHijacked
	}
	if w.status != 0 {
		return nil, nil, errors.New("server: hijack after the response began")
	}
	w.hijacked = true
	return w.c, &bufio.ReadWriter{}, nil
}

// finish writes the response as net/http's server would (status line,
// the handler's headers, Date, Content-Type when unset, Content-Length)
// and reports whether the connection may carry another request: not when
// stopping (a shutdown began: the HTTP servers' keep-alives are off, and a
// kept connection would hold the drain until the client's next request
// or the handshake timeout).
func (w *connectWriter) finish(r *http.Request, stopping bool) (keep bool) {
	status := w.status
	if status == 0 {
		status = http.StatusOK
	}
	h := w.Header()
	keep = !stopping && !r.Close && !hasToken(h.Values("Connection"), "close")
	if r.ProtoMinor == 0 && !hasToken(r.Header.Values("Connection"), "keep-alive") {
		keep = false // an HTTP/1.0 client that did not ask to keep it
	}
	body := w.body.Bytes()
	if !bodyAllowed(status) {
		body = nil
	} else {
		if _, ok := h["Content-Type"]; !ok && len(body) > 0 {
			h.Set("Content-Type", http.DetectContentType(body))
		}
		if _, ok := h["Content-Length"]; !ok {
			h.Set("Content-Length", strconv.Itoa(len(body)))
		}
	}
	if _, ok := h["Date"]; !ok {
		h.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	}
	if !keep {
		h.Set("Connection", "close")
	} else if r.ProtoMinor == 0 {
		h.Set("Connection", "keep-alive")
	}
	var b bytes.Buffer
	b.WriteString("HTTP/1.1 ")
	b.WriteString(strconv.Itoa(status))
	b.WriteByte(' ')
	b.WriteString(http.StatusText(status))
	b.WriteString("\r\n")
	h.Write(&b)
	b.WriteString("\r\n")
	b.Write(body)
	w.c.SetWriteDeadline(time.Now().Add(responseWriteTimeout))
	_, err := w.c.Write(b.Bytes())
	w.c.SetWriteDeadline(time.Time{})
	return keep && err == nil
}

// responseWriteTimeout bounds the write of a refusal to a client that
// does not read.
const responseWriteTimeout = 10 * time.Second

// bodyAllowed reports whether a response with status may have a body.
func bodyAllowed(status int) bool {
	return status >= 200 && status != http.StatusNoContent && status != http.StatusNotModified
}

// hasToken reports whether a comma-separated header value lists token.
func hasToken(values []string, token string) bool {
	for _, v := range values {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}
