package server

import (
	"bufio"
	"bytes"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluiceproxy/sluice/rules"
)

// servePlainLoop serves a connection that opens with a plain GET or HEAD
// (an absolute URI, no body) whose whole head came in its first read, on
// the worker goroutine that accepted it, through the same handler as the
// HTTP server's requests (serveHTTP, then the state's proxy.Server), and
// then the requests that follow on the connection while each is such a
// request (issue 13: the keep-alive load). It skips what net/http's
// server costs each request: the background read (a goroutine wake-up
// and a read(2) per request), the request's cancel context and its
// response's buffers; the response is written by plainWriter, net/http's
// own framing rules, so that a small answer leaves in one write(2).
//
// What net/http's server does between requests is done here too: a
// request that asks to close (Connection: close, HTTP/1.0 without
// keep-alive), an answer whose length is not known or not kept, a write
// error or a shutdown ends the connection; pipelined requests are served
// in order; the next request must start within timeouts.idle; an idle
// connection is closed at once when a shutdown begins (conns.drain).
//
// It returns false, having consumed nothing, when the first request is
// not one it serves; the HTTP server then serves the connection as
// before. A later request it does not serve (another method, a body, a
// head not whole in one read, a head net/http would refuse) goes to the
// HTTP server with the bytes read so far.
func (s *Server) servePlainLoop(c *conn) bool {
	r, rest := readPlain(c.prefix)
	if r == nil {
		return false
	}
	l := loops.Get().(*plainLoop)
	l.ew.c = c
	defer l.release()
	remote := c.RemoteAddr().String()
	keepAlives := s.keepAlives // one method value for the connection's requests
	was := http.StateNew
	for {
		c.prefix = rest
		// Idle to active in one step, against conns.drain's idle to
		// closed: either the drain closed the connection before this
		// request went anywhere, or the request is answered first.
		if !c.http.CompareAndSwap(int32(was), int32(http.StateActive)) {
			c.prefix = nil // l.buf goes back to the pool
			c.Close()      // closed by a shutdown's drain while idle
			return true
		}
		was = http.StateIdle
		c.SetReadDeadline(time.Time{})
		r.RemoteAddr = remote
		if !l.serveOne(r.WithContext(s.connectBase()), keepAlives, s.serveHTTP, s.log) {
			c.prefix = nil // l.buf goes back to the pool
			c.Close()
			return true
		}
		if s.conns.connState(c, http.StateIdle); c.closed.Load() {
			c.prefix = nil // a shutdown began: not even a pipelined request is served
			return true
		}
		if len(c.prefix) == 0 {
			idle := orDefault(s.state.Load().cfg.Timeouts.Idle, rules.DefaultIdleTimeout)
			c.SetReadDeadline(time.Now().Add(idle))
			n, err := c.Conn.Read(l.buf[:])
			if n == 0 || err != nil {
				c.prefix = nil
				c.Close() // gone, silent for the idle timeout, or closed by a shutdown
				return true
			}
			c.prefix = l.buf[:n]
		}
		if hook := testHookBeforeActive.Load(); hook != nil {
			(*hook)()
		}
		if r, rest = readPlain(c.prefix); r == nil {
			c.prefix = append([]byte(nil), c.prefix...) // l.buf goes back to the pool
			c.SetReadDeadline(time.Time{})
			s.toHTTP(c)
			return true
		}
	}
}

// testHookBeforeActive, when set by a test, runs between a kept
// connection's next request being read and its being marked active: in
// servePlainLoop, and in connState for the HTTP servers.
var testHookBeforeActive atomic.Pointer[func()]

// serveOne serves r with h and reports whether the connection may carry
// another request; keepAlives reports false once a shutdown began (asked
// when the answer's head is written, as net/http's server asks). A panic
// ends the connection as net/http's server ends it: what is buffered is
// sent, then the connection is closed (a handler aborts a response whose
// body was cut with http.ErrAbortHandler, so that the client sees the
// cut). An aborted answer whose end is the connection's end (no length,
// no chunks: an HTTP/1.0 client's) is cut with a reset, as serveHTTP
// cuts it for net/http's server: a clean close would make it look
// complete.
func (l *plainLoop) serveOne(r *http.Request, keepAlives func() bool, h http.HandlerFunc, log *slog.Logger) (keep bool) {
	w := &l.w
	w.reset(r, l.out, l.stage, &l.ew, keepAlives)
	defer func() {
		if p := recover(); p != nil {
			if p != http.ErrAbortHandler { // as the HTTP servers' ErrorLog
				log.Debug("http: panic serving request", "client", r.RemoteAddr, "panic", fmt.Sprint(p))
			}
			l.out.Flush()
			if c, ok := l.ew.c.(*conn); ok && p == http.ErrAbortHandler && w.closeDelimited() {
				c.cut()
			}
			keep = false
		}
		w.req = nil
	}()
	h(w, r)
	w.finish()
	return w.reusable()
}

// keepAlives reports whether a connection may carry another request: not
// once a shutdown began.
func (s *Server) keepAlives() bool { return !s.isStopping() }

// plainLoop is what servePlainLoop keeps for a connection, pooled: the
// buffer the next request is read into, the writers of the answers.
type plainLoop struct {
	ew    errWriter
	out   *bufio.Writer // to the client: net/http's conn.bufw
	stage *bufio.Writer // a body not yet committed: net/http's response.w
	w     plainWriter
	buf   [loopReadSize]byte
}

// loopReadSize bounds a read of the next request on a kept connection: a
// head longer than that goes to the HTTP server.
const loopReadSize = 4 << 10

var loops = sync.Pool{New: func() any {
	l := &plainLoop{}
	l.out = bufio.NewWriterSize(&l.ew, 4<<10)
	l.stage = bufio.NewWriterSize((*chunkSink)(&l.w), bufferBeforeChunking)
	return l
}}

// release puts l back in the pool, emptied.
func (l *plainLoop) release() {
	l.ew = errWriter{}
	l.out.Reset(&l.ew)
	l.stage.Reset((*chunkSink)(&l.w))
	l.w = plainWriter{}
	loops.Put(l)
}

// errWriter writes to the client and remembers the first error (net/http's
// checkConnErrorWriter): a connection a write failed on is not reused.
type errWriter struct {
	c   net.Conn
	err error
}

func (w *errWriter) Write(p []byte) (int, error) {
	n, err := w.c.Write(p)
	if err != nil && w.err == nil {
		w.err = err
	}
	return n, err
}

// The starts of the requests servePlainLoop serves; obs-fold lines.
var (
	getPrefix  = []byte("GET ")
	headPrefix = []byte("HEAD ")
	foldSpace  = []byte("\n ")
	foldTab    = []byte("\n\t")
)

// readPlain parses the request head at the start of buf when it is one
// servePlainLoop serves: a GET or HEAD to an absolute URI, HTTP/1.x,
// without a body (no Content-Length other than 0, no Transfer-Encoding),
// Expect or Upgrade, whose whole head is in buf, and which net/http's
// server would hand to its handler (its (*conn).readRequest: a Host
// header in HTTP/1.1, a valid one, valid header names and values). rest
// is what follows the head in buf (a pipelined request). It returns nil
// for anything else.
func readPlain(buf []byte) (r *http.Request, rest []byte) {
	if !bytes.HasPrefix(buf, getPrefix) && !bytes.HasPrefix(buf, headPrefix) {
		return nil, nil
	}
	end := bytes.Index(buf, headEnd)
	if end < 0 {
		return nil, nil
	}
	head := buf[:end+len(headEnd)]
	r, hasHost := readHead(head)
	if r == nil || !r.URL.IsAbs() || r.Method != http.MethodGet && r.Method != http.MethodHead ||
		len(r.Header["Upgrade"]) > 0 {
		return nil, nil
	}
	if !hasHost && r.ProtoAtLeast(1, 1) {
		return nil, nil // 400 missing Host header
	}
	rest = buf[len(head):]
	if len(rest) == 0 {
		rest = nil
	}
	return r, rest
}
