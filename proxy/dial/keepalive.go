package dial

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/textproto"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"
)

// The direct route serves the commonest plain request, a GET or HEAD
// without a body to an http:// URL, on its own keep-alive pool (issue 13):
// the request is written and the answer read on the caller's goroutine,
// where http.Transport hands every request to two goroutines per
// connection (writeLoop, readLoop) and back through channels. Everything
// else (bodies, Expect, https) goes to the route's *http.Transport.
//
// What the pool keeps from http.Transport: connections are per origin
// address and reused only after a complete answer that did not ask to
// close, and only while idle and silent (a peek that does not wait finds
// nothing: bytes the origin sent unasked are never taken for the next
// answer, as the Transport's readLoop ensures); a reused connection is
// checked again for the request that reuses it (as checkedTransport does)
// and a request that finds it closed by the origin anyway (the write
// fails or the answer ends before its first byte) is sent once more on a
// new connection, as GET and HEAD may be; 1xx
// answers are skipped; response headers are bounded; a request whose
// context ends is cut; a header the Transport refuses to send is refused;
// after closeIdle, connections that become idle are closed until the next
// request. Idle connections close after keepAliveIdle, or within
// sweepEvery of the origin closing them.

const (
	// keepAliveIdle closes pooled connections idle for this long (the
	// route Transport's IdleConnTimeout).
	keepAliveIdle = 90 * time.Second
	// keepAlivePerHost and keepAliveTotal bound the idle connections kept
	// (the route Transport's MaxIdleConnsPerHost and MaxIdleConns).
	keepAlivePerHost = 64
	keepAliveTotal   = 1024
	// maxHeaderBytes bounds an answer's status line and headers (the
	// route Transport's MaxResponseHeaderBytes).
	maxHeaderBytes = 1 << 20
	// max1xx is how many 1xx answers are skipped before the real one.
	max1xx = 5
)

// errCut is a request cut because its context ended.
var errCut = errors.New("dial: request cancelled")

// keepAlive is a pool of origin connections for simple plain requests.
type keepAlive struct {
	dial func(ctx context.Context, network, addr string) (net.Conn, error)

	mu    sync.Mutex
	idle  map[string][]*originConn // by "host:port", most recently used last
	n     int                      // idle connections in all of idle
	timer *time.Timer              // sweeps idle connections; nil when none
	gen   int                      // counts closeIdle calls
	// closing is set by closeIdle and cleared by the next request (get):
	// meanwhile connections that become idle are closed, not kept, as
	// http.Transport does after CloseIdleConnections, so that requests in
	// flight at a reload or shutdown leave no connection (nor sweep) behind.
	closing bool
}

// originConn is one pooled connection.
type originConn struct {
	conn  net.Conn
	lr    limitReader // bounds the headers of each answer
	br    *bufio.Reader
	bw    *bufio.Writer
	addr  string
	since time.Time // when it became idle
	peek  *peeker
}

// limitReader reads from r and fails after n bytes.
type limitReader struct {
	r net.Conn
	n int64
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, errors.New("dial: response headers too long")
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}

// simple reports whether req can be sent on the pool: a GET or HEAD
// without a body or Expect to an http:// URL.
func simple(req *http.Request) bool {
	return (req.Method == http.MethodGet || req.Method == http.MethodHead) &&
		req.URL.Scheme == "http" && (req.Body == nil || req.Body == http.NoBody) &&
		req.ContentLength == 0 && len(req.Header["Expect"]) == 0 && !req.Close
}

// originAddr is the "host:port" req goes to, as http.Transport computes
// it (the URL's host is already normalized by the front end).
func originAddr(req *http.Request) string {
	host, port := req.URL.Hostname(), req.URL.Port()
	if port == "" {
		port = "80"
	}
	return net.JoinHostPort(host, port)
}

// roundTrip sends req on a pooled connection or a new one; check, when not
// nil, decides a pooled connection's address again.
func (k *keepAlive) roundTrip(req *http.Request, check Check) (*http.Response, error) {
	if err := validHeader(req.Header); err != nil {
		return nil, err
	}
	ctx := req.Context()
	addr := originAddr(req)
	for attempt := 0; ; attempt++ {
		oc := k.get(addr, check)
		reused := oc != nil
		if oc == nil {
			c, err := k.dial(ctx, "tcp", addr)
			if err != nil {
				return nil, err
			}
			oc = &originConn{conn: c, addr: addr, peek: newPeeker(c)}
			oc.lr.r = c
			oc.br = bufio.NewReaderSize(&oc.lr, 4<<10)
			oc.bw = bufio.NewWriterSize(c, 4<<10)
		}
		resp, err, retry := k.exchange(ctx, oc, req)
		if err == nil {
			return resp, nil
		}
		oc.conn.Close()
		if !retry || !reused || attempt > 0 || ctx.Err() != nil {
			return nil, err
		}
		// A pooled connection the origin had closed: once more, anew.
	}
}

// validHeader refuses a header http.Transport refuses to send: a name
// that is not a token, a value with a control byte other than a tab.
func validHeader(h http.Header) error {
	for k, vv := range h {
		if !httpguts.ValidHeaderFieldName(k) {
			return fmt.Errorf("dial: invalid header field name %q", k)
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return fmt.Errorf("dial: invalid header field value for %q", k)
			}
		}
	}
	return nil
}

// exchange writes req on oc and reads the answer. retry is true when
// nothing of an answer came (the request may be sent again).
func (k *keepAlive) exchange(ctx context.Context, oc *originConn, req *http.Request) (resp *http.Response, err error, retry bool) {
	stop := context.AfterFunc(ctx, func() { oc.conn.SetDeadline(aLongTimeAgo) })
	cut := func(what string, err error) error {
		if ctx.Err() != nil {
			return fmt.Errorf("%w: %w", errCut, ctx.Err())
		}
		return fmt.Errorf("dial: %s %s: %w", what, oc.addr, err)
	}
	if err := writeRequest(oc.bw, req); err != nil {
		stop()
		return nil, cut("writing the request to", err), true
	}
	if err := oc.bw.Flush(); err != nil {
		stop()
		return nil, cut("writing the request to", err), true
	}
	oc.lr.n = maxHeaderBytes
	if _, err := oc.br.Peek(1); err != nil {
		stop()
		return nil, cut("reading the answer of", err), true
	}
	var head []byte // the bytes the answer's head was read from
	for n := 0; ; n++ {
		head, _ = oc.br.Peek(oc.br.Buffered())
		resp, err = http.ReadResponse(oc.br, req)
		if err != nil {
			stop()
			return nil, cut("reading the answer of", err), false
		}
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			break
		}
		if n == max1xx {
			stop()
			return nil, fmt.Errorf("dial: %s sent too many 1xx answers", oc.addr), false
		}
	}
	oc.lr.n = 1<<63 - 1 // the body is not bounded
	reuse := !resp.Close && resp.StatusCode != http.StatusSwitchingProtocols
	if reuse && (len(resp.TransferEncoding) > 0 || !resp.ProtoAtLeast(1, 1)) && framingDoubt(head, !resp.ProtoAtLeast(1, 1)) {
		reuse = false
	}
	if resp.Body == http.NoBody || resp.Body == nil {
		if stop() && reuse && oc.br.Buffered() == 0 {
			k.put(oc)
		} else {
			oc.conn.Close()
		}
		return resp, nil, false
	}
	resp.Body = &pooledBody{ReadCloser: resp.Body, k: k, oc: oc, stop: stop, reuse: reuse, ctx: ctx}
	return resp, nil, false
}

// framingDoubt reports whether an answer's head, read from head (what
// was buffered when its reading began), had framing that a parser may
// read two ways: both Transfer-Encoding and Content-Length (net/http
// follows the first and deletes the second), or Transfer-Encoding in an
// HTTP/1.0 answer (net/http ignores it and deletes it). RFC 9112 6.1 and
// 6.3 ask to close the connection after such an answer, as Squid does;
// http.Transport keeps it. A head not wholly in head is a doubt too.
// Only asked for answers that were chunked or HTTP/1.0.
func framingDoubt(head []byte, http10 bool) bool {
	end := bytes.Index(head, []byte("\n\r\n"))
	if end < 0 {
		if end = bytes.Index(head, []byte("\n\n")); end < 0 {
			return true
		}
	}
	head = head[:end+1]
	te, cl := false, false
	for len(head) > 0 {
		line := head
		if i := bytes.IndexByte(head, '\n'); i >= 0 {
			line, head = head[:i], head[i+1:]
		} else {
			head = nil
		}
		if k, _, ok := bytes.Cut(line, []byte(":")); ok {
			k = bytes.TrimRight(k, " \t")
			te = te || bytes.EqualFold(k, []byte("Transfer-Encoding"))
			cl = cl || bytes.EqualFold(k, []byte("Content-Length"))
		}
	}
	return te && (cl || http10)
}

// writeRequest writes req's head, as req.Write would write it for a GET
// or HEAD without a body (the test holds the two side by side) without
// its fmt calls; anything unusual goes to req.Write itself.
func writeRequest(w *bufio.Writer, req *http.Request) error {
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	ruri := req.URL.RequestURI()
	ua, hasUA := "", false
	if v, ok := req.Header["User-Agent"]; ok {
		hasUA = true
		if len(v) > 0 {
			ua = v[0]
		}
	}
	if req.Method == "" || !token(host) || strings.IndexByte(host, '%') >= 0 ||
		!httpguts.ValidHostHeader(host) || !token(ruri) || !plainASCII(ua) || !hasUA {
		return req.Write(w)
	}
	w.WriteString(req.Method)
	w.WriteByte(' ')
	w.WriteString(ruri)
	w.WriteString(" HTTP/1.1\r\nHost: ")
	w.WriteString(host)
	w.WriteString("\r\n")
	if ua != "" { // as Request.Write: a value of blanks gives an empty header
		w.WriteString("User-Agent: ")
		w.WriteString(textproto.TrimString(ua))
		w.WriteString("\r\n")
	}
	if err := req.Header.WriteSubset(w, reqWriteExclude); err != nil {
		return err
	}
	_, err := w.WriteString("\r\n")
	return err
}

// reqWriteExclude are the headers Request.Write writes itself, or not.
var reqWriteExclude = map[string]bool{
	"Host": true, "User-Agent": true, "Content-Length": true, "Transfer-Encoding": true, "Trailer": true,
}

// token reports whether s is printable ASCII without spaces.
func token(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c > '~' {
			return false
		}
	}
	return true
}

// plainASCII reports whether s has only printable ASCII and spaces or
// tabs: no control byte, no CR or LF, nothing to convert.
func plainASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < ' ' && c != '\t') || c > '~' {
			return false
		}
	}
	return true
}

// pooledBody is an answer's body; its end gives the connection back to
// the pool when the answer allows it, and closes it otherwise.
type pooledBody struct {
	io.ReadCloser
	k     *keepAlive
	oc    *originConn // nil once released
	stop  func() bool // ends the context's watch; false if it fired
	ctx   context.Context
	reuse bool
	err   error // what Read returns once oc is released
}

// errBodyClosed is a read after Close, as net/http's.
var errBodyClosed = errors.New("dial: read on closed response body")

func (b *pooledBody) Read(p []byte) (int, error) {
	if b.oc == nil {
		return 0, b.err
	}
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.release(b.reuse, io.EOF)
	} else if err != nil {
		if b.ctx.Err() != nil {
			err = fmt.Errorf("%w: %w", errCut, b.ctx.Err())
		}
		b.release(false, err)
	}
	return n, err
}

// Close ends the body; a connection whose answer was not read to its end
// is closed.
func (b *pooledBody) Close() error {
	b.release(false, errBodyClosed)
	b.err = errBodyClosed
	return nil
}

func (b *pooledBody) release(reuse bool, err error) {
	oc := b.oc
	if oc == nil {
		return
	}
	b.oc, b.err = nil, err
	if b.stop() && reuse && oc.br.Buffered() == 0 {
		b.k.put(oc)
		return
	}
	oc.conn.Close()
}

// get returns an idle connection to addr that check allows, or nil.
func (k *keepAlive) get(addr string, check Check) *originConn {
	for {
		k.mu.Lock()
		k.closing = false // a request wants connections kept again
		l := k.idle[addr]
		if len(l) == 0 {
			k.mu.Unlock()
			return nil
		}
		oc := l[len(l)-1]
		l[len(l)-1] = nil
		k.idle[addr] = l[:len(l)-1]
		k.n--
		k.mu.Unlock()
		if time.Since(oc.since) >= keepAliveIdle || !oc.peek.idleAlive() {
			// Old, closed by the origin, or holding bytes nobody asked
			// for (which must never pass for the next request's answer).
			oc.conn.Close()
			continue
		}
		if check != nil {
			ap, ok := remoteAddrPort(oc.conn)
			if !ok || check(netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())) != nil {
				// Refused for this request: closed before a byte is
				// written; the dial that follows is checked and refused.
				oc.conn.Close()
				return nil
			}
		}
		return oc
	}
}

// put keeps oc for the next request to its address, or closes it when the
// pool is full.
func (k *keepAlive) put(oc *originConn) {
	oc.since = time.Now()
	k.mu.Lock()
	k.keepLocked(oc)
	k.mu.Unlock()
}

// keepLocked adds oc to the pool, or closes it when the pool is full, and
// arms the sweep. k.mu is held.
func (k *keepAlive) keepLocked(oc *originConn) {
	if k.idle == nil {
		k.idle = map[string][]*originConn{}
	}
	l := k.idle[oc.addr]
	if k.closing || len(l) >= keepAlivePerHost || k.n >= keepAliveTotal {
		oc.conn.Close() // a nonblocking close of a socket: fine under the lock
		return
	}
	k.idle[oc.addr] = append(l, oc)
	k.n++
	if k.timer == nil {
		k.timer = time.AfterFunc(sweepEvery, k.sweep)
	}
}

// sweepEvery is how often idle connections are looked at: those idle for
// keepAliveIdle and those the origin closed (or wrote to unasked) are
// closed, so that a closed one does not linger in CLOSE_WAIT (as
// http.Transport's readLoop would notice at once).
const sweepEvery = 10 * time.Second

// sweep takes the idle connections out of the pool, closes the old and
// the dead ones, and puts the others back; requests that come meanwhile
// dial anew. It runs again while any are left.
func (k *keepAlive) sweep() {
	k.mu.Lock()
	idle, gen := k.idle, k.gen
	k.idle, k.n, k.timer = nil, 0, nil
	k.mu.Unlock()
	var keep []*originConn
	for _, l := range idle {
		for _, oc := range l {
			if time.Since(oc.since) >= keepAliveIdle || !oc.peek.idleAlive() {
				oc.conn.Close()
				continue
			}
			keep = append(keep, oc)
		}
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, oc := range keep {
		if k.gen != gen { // closeIdle ran meanwhile
			oc.conn.Close()
			continue
		}
		k.keepLocked(oc)
	}
}

// closeIdle closes every idle connection.
func (k *keepAlive) closeIdle() {
	k.mu.Lock()
	idle := k.idle
	k.idle, k.n = nil, 0
	k.gen++
	k.closing = true
	if k.timer != nil {
		k.timer.Stop()
		k.timer = nil
	}
	k.mu.Unlock()
	for _, l := range idle {
		for _, oc := range l {
			oc.conn.Close()
		}
	}
}
