package server

import (
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluiceproxy/sluice/proxy/relay"
)

// conn is one accepted client connection, tracked from accept to Close
// whatever serves it: the HTTP server (keep-alive requests, hijacked
// CONNECT and WebSocket tunnels), its worker (a CONNECT whose head came in
// the first read, see serveConnect) or SOCKS. Shutdown waits for every
// conn to close, and closes those still open when the grace period ends.
type conn struct {
	net.Conn
	t       *conns
	client  netip.Addr
	counted bool                       // counted against the limits
	refused bool                       // beyond a limit: answered 503 or 0x01
	limit   string                     // the limit it is beyond: "max_conns", "per_client"
	prefix  []byte                     // peeked bytes still to be read
	http    atomic.Int32               // the http.ConnState while the HTTP server has it
	life    atomic.Pointer[time.Timer] // timeouts.lifetime; nil when unlimited
	closed  atomic.Bool
	headBy  atomic.Int64           // see SetReadDeadline: unix ns; 0 when none
	onClose atomic.Pointer[func()] // counts its end in the metrics; see track
	inline  atomic.Pointer[func()] // see Inline: nil, inlineOpen or the direction to run
	once    sync.Once
}

// inlineOpen marks a conn whose worker takes a direction of its tunnel
// (see Inline).
var inlineOpen = new(func())

// Inline implements relay.Inliner: while the worker that accepted c
// serves its handshake (between openInline and takeInline), a tunnel
// started on c runs one of its directions on that worker once the
// handler returns, rather than on a new goroutine: one goroutine
// started, scheduled and ended less per tunnel. The worker runs it until
// the direction ends or parks, then serves the next connection.
func (c *conn) Inline(run func()) bool {
	return c.inline.CompareAndSwap(inlineOpen, &run)
}

// openInline lets a tunnel started on c leave a direction to the worker.
func (c *conn) openInline() { c.inline.Store(inlineOpen) }

// takeInline closes c to Inline and returns the direction left to the
// worker, or nil. Whatever the order in which Inline and takeInline
// race, a direction is either taken here or started by the relay.
func (c *conn) takeInline() func() {
	if p := c.inline.Swap(nil); p != nil && p != inlineOpen {
		return *p
	}
	return nil
}

func (c *conn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		if c.prefix = c.prefix[n:]; len(c.prefix) == 0 {
			c.prefix = nil // an empty tail still holds the peeked buffer for the conn's life
		}
		return n, nil
	}
	return c.Conn.Read(p)
}

// SetReadDeadline sets the read deadline, but not later than headBy
// while it is set: the end of the handshake timeout counted from the
// accept, for a connection whose first head was not whole in its first
// read and went to the HTTP server, so that the server's own
// ReadHeaderTimeout, counted from the hand-off, cannot stretch the head
// to twice the timeout. The server clears the deadline once it has read
// the head; that ends the bound.
func (c *conn) SetReadDeadline(t time.Time) error {
	if by := c.headBy.Load(); by != 0 {
		if t.IsZero() {
			c.headBy.Store(0)
		} else if t.UnixNano() > by {
			t = time.Unix(0, by)
		}
	}
	return c.Conn.SetReadDeadline(t)
}

// Unwrap implements relay.Unwrapper, so that tunnels splice the raw
// socket; closing goes through the wrapper that was handed out.
func (c *conn) Unwrap() (net.Conn, []byte) { return c.Conn, c.prefix }

// CloseWrite half-closes the socket.
func (c *conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// Close closes the socket and stops tracking it.
func (c *conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.closed.Store(true)
		if t := c.life.Load(); t != nil {
			t.Stop()
		}
		if f := c.onClose.Swap(nil); f != nil {
			(*f)()
		}
		c.t.remove(c)
	})
	return err
}

// track runs *done exactly once when c closes (at once if it already
// has), whichever goroutine closes it. done may be shared by many conns
// (see metrics.opened): a pointer made once, so tracking allocates nothing.
func (c *conn) track(done *func()) {
	c.onClose.Store(done)
	if c.closed.Load() && c.onClose.CompareAndSwap(done, nil) {
		(*done)()
	}
}

// closeAfter cuts c after d, whatever it is doing (timeouts.lifetime):
// with a RST, so that a client whose transfer is cut sees an error rather
// than an end that makes it look complete. A tunnel's relay then resets
// the origin too.
func (c *conn) closeAfter(d time.Duration) {
	c.life.Store(time.AfterFunc(d, c.cut))
	if c.closed.Load() { // closed meanwhile: Close may have missed the timer
		c.life.Load().Stop()
	}
}

// cut closes c with a RST where a TCP socket lies underneath: its peer
// sees an error, not an end. It resets the wrapped conn (not c, whose
// peeked prefix belongs to the goroutine serving it).
func (c *conn) cut() {
	relay.Cut(c.Conn)
	c.Close()
}

// conns tracks the open client connections, enforces `limits` and rate
// limits the log lines about refused clients.
type conns struct {
	log *slog.Logger

	mu        sync.Mutex
	all       map[*conn]struct{}
	perClient map[netip.Addr]int
	counted   int
	zero      chan struct{} // closed when all becomes empty; nil when it is
	draining  bool
	refusals  map[netip.Addr]*refusal
}

// refusal is the log state of one client's refused connections.
type refusal struct {
	logged     time.Time
	suppressed int
}

// refusalLogEvery is how often a refused client is logged at most.
const refusalLogEvery = time.Minute

func newConns(log *slog.Logger) *conns {
	return &conns{log: log, all: map[*conn]struct{}{}, perClient: map[netip.Addr]int{}, refusals: map[netip.Addr]*refusal{}}
}

// add tracks c, accepted from client. Under the limits it is counted;
// beyond one it is tracked but marked refused, and one line per client per
// minute is logged.
func (t *conns) add(c net.Conn, client netip.Addr, maxConns, perClient int) *conn {
	tc := &conn{Conn: c, t: t, client: client}
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.all) == 0 {
		t.zero = make(chan struct{})
	}
	t.all[tc] = struct{}{}
	limit := ""
	switch {
	case t.counted >= maxConns:
		limit = "max_conns"
	case t.perClient[client] >= perClient:
		limit = "per_client"
	}
	if limit == "" {
		tc.counted = true
		t.counted++
		t.perClient[client]++
		return tc
	}
	tc.refused, tc.limit = true, limit
	t.logRefusal(client, limit, maxConns, perClient)
	return tc
}

// logRefusal logs a refused connection at most once per client per
// refusalLogEvery, with the number refused since the last line. t.mu is held.
func (t *conns) logRefusal(client netip.Addr, limit string, maxConns, perClient int) {
	now := time.Now()
	r := t.refusals[client]
	if r != nil && now.Sub(r.logged) < refusalLogEvery {
		r.suppressed++
		return
	}
	if len(t.refusals) >= 4096 { // forget clients not refused for a while
		for a, old := range t.refusals {
			if now.Sub(old.logged) >= refusalLogEvery {
				delete(t.refusals, a)
			}
		}
	}
	suppressed := 0
	if r != nil {
		suppressed = r.suppressed
	}
	t.refusals[client] = &refusal{logged: now}
	t.log.Warn("connection limit reached; refusing the client's new connections (logged once a minute per client)",
		"client", client.String(), "limit", limit, "max_conns", maxConns, "per_client", perClient,
		"open", t.counted, "client_open", t.perClient[client], "refused_since_last_line", suppressed)
}

func (t *conns) remove(c *conn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.all[c]; !ok {
		return
	}
	delete(t.all, c)
	if c.counted {
		t.counted--
		if t.perClient[c.client]--; t.perClient[c.client] <= 0 {
			delete(t.perClient, c.client)
		}
	}
	if len(t.all) == 0 && t.zero != nil {
		close(t.zero)
		t.zero = nil
	}
}

// idle returns a channel closed when no connection is open.
func (t *conns) idle() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.zero == nil {
		c := make(chan struct{})
		close(c)
		return c
	}
	return t.zero
}

// len returns the number of open connections.
func (t *conns) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.all)
}

// drain starts a shutdown: idle keep-alive connections are closed now,
// and from now on each as soon as it becomes idle.
func (t *conns) drain() {
	t.mu.Lock()
	t.draining = true
	var idle []*conn
	for c := range t.all {
		if http.ConnState(c.http.Load()) == http.StateIdle {
			idle = append(idle, c)
		}
	}
	t.mu.Unlock()
	for _, c := range idle {
		// Idle to closed in one step, against the plain loop's idle to
		// active: a connection whose next request the loop has begun
		// serving is left to finish it (connState closes it after).
		if c.http.CompareAndSwap(int32(http.StateIdle), int32(http.StateClosed)) {
			c.Close()
		}
	}
}

// closeAll cuts every connection still open (the end of the grace
// period) with a RST: what they were doing did not finish.
func (t *conns) closeAll() int {
	t.mu.Lock()
	open := make([]*conn, 0, len(t.all))
	for c := range t.all {
		open = append(open, c)
	}
	t.mu.Unlock()
	for _, c := range open {
		c.cut()
	}
	return len(open)
}

// connState is the HTTP servers' ConnState hook: it records whether a
// keep-alive connection is idle, and closes it at once when idle during a
// shutdown.
func (t *conns) connState(nc net.Conn, st http.ConnState) {
	c, ok := nc.(*conn)
	if !ok {
		return
	}
	if st == http.StateActive {
		if hook := testHookBeforeActive.Load(); hook != nil {
			(*hook)()
		}
	}
	// One step, against drain's idle to closed: a connection the drain
	// closed stays closed (also when the plain loop handed it to the HTTP
	// server with a request already read), and serveHTTP sends its
	// request nowhere.
	for {
		cur := c.http.Load()
		if http.ConnState(cur) == http.StateClosed {
			return
		}
		if c.http.CompareAndSwap(cur, int32(st)) {
			break
		}
	}
	if st == http.StateIdle {
		t.mu.Lock()
		draining := t.draining
		t.mu.Unlock()
		if draining {
			c.Close()
		}
	}
}
