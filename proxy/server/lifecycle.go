package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sluiceproxy/sluice/proxy"
	"github.com/sluiceproxy/sluice/rules"
	"github.com/sluiceproxy/sluice/socks"
)

// Run opens the listeners, writes the pid file, starts the reload triggers
// (SIGHUP unless Options.NoSignals, the file watcher when a config file is
// used, the remote list refresh) and the access log's reopen on SIGUSR1
// (unless Options.NoSignals), and serves until ctx is cancelled. Run may
// be called once.
//
// Shutdown, when ctx is cancelled: the listeners close at once, so new
// connections are refused; idle keep-alive connections are closed;
// requests, CONNECT and WebSocket tunnels and SOCKS connections in flight
// go on for up to `shutdown_grace` (default 30s); then every connection
// still open is closed. Run removes the pid file and returns nil once every
// connection has ended.
func (s *Server) Run(ctx context.Context) error {
	defer s.stop()
	st := s.state.Load()
	raiseFDLimit(s.log)
	// Accepted sockets get no TCP keep-alive (Go's default would cost four
	// setsockopt(2) calls per connection): idle tunnels and keep-alive
	// connections end with the idle timeout, as in Squid and microsocks.
	lc := net.ListenConfig{KeepAlive: -1}
	var lns []net.Listener
	closeAll := func() {
		for _, ln := range lns {
			ln.Close()
		}
	}
	for _, a := range st.cfg.Listen {
		ln, err := lc.Listen(ctx, "tcp", a)
		if err != nil {
			closeAll()
			return listenError("", a, err)
		}
		lns = append(lns, ln)
	}
	var tlns []net.Listener // transparent
	for _, a := range st.cfg.Transparent.Listen {
		ln, err := lc.Listen(ctx, "tcp", a)
		if err != nil {
			closeAll()
			return listenError("transparent", a, err)
		}
		lns = append(lns, ln)
		tlns = append(tlns, ln)
	}
	s.addr = lns[0].Addr()
	adm, err := s.startAdmin(st.cfg.Admin)
	if err != nil {
		closeAll()
		return err
	}
	defer adm.close()
	own := listenAddrs(lns)
	if adm != nil {
		own = append(own, listenAddrs([]net.Listener{adm.ln})...)
	}
	s.own.Store(&own)
	pidFile := st.cfg.PidFile
	if err := writePidFile(pidFile, s.opts.Config); err != nil {
		if errors.Is(err, ErrAlreadyRunning) || pidFile != rules.DefaultPidFile(st.cfg.File) {
			closeAll()
			return err
		}
		// The default place may be read-only (the config under /etc).
		s.log.Warn("no pid file; `sluice reload` needs --pid (set pid_file: to a writable path)", "err", err)
		pidFile = ""
	}
	defer removePidFile(pidFile)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Before "listening on": whoever waits for that line may send SIGHUP.
	defer s.startTriggers(ctx)()
	for _, ln := range lns[:len(lns)-len(tlns)] {
		s.log.Info("listening on "+ln.Addr().String(), "addr", ln.Addr().String())
		s.wg.Go(func() { s.accept(ctx, ln, s.handle) })
	}
	for _, ln := range tlns {
		s.log.Info("transparent: listening on "+ln.Addr().String()+" for redirected connections", "addr", ln.Addr().String())
		s.wg.Go(func() { s.accept(ctx, ln, s.handleTransparent) })
	}
	adm.setReady(true)

	<-ctx.Done()
	adm.setReady(false)
	closeAll()
	s.shutdown()
	s.alog.Close()
	s.log.Info("stopped")
	return nil
}

// startTriggers starts what reloads the rules: SIGHUP, the file watcher and
// the remote list refresh; and SIGUSR1, which reopens the access log. They
// stop with ctx, but SIGHUP and SIGUSR1 stay caught (and are ignored during
// the shutdown, rather than killing the process) until the returned
// function is called.
func (s *Server) startTriggers(ctx context.Context) (release func()) {
	release = func() {}
	if !s.opts.NoSignals {
		hup := make(chan os.Signal, 1)
		usr1 := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		signal.Notify(usr1, syscall.SIGUSR1)
		release = func() { signal.Stop(hup); signal.Stop(usr1) }
		s.wg.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case <-hup:
					s.log.Info("SIGHUP: reloading")
					_ = s.Reload()
				case <-usr1:
					s.reopenAccessLog()
				}
			}
		})
	}
	if s.opts.Config != "" {
		s.wg.Go(func() {
			if err := s.watch(ctx); err != nil {
				s.log.Warn("file watching disabled; use SIGHUP or 'sluice reload -c FILE'", "err", err)
			}
		})
	}
	s.wg.Go(func() { s.RefreshLoop(ctx) })
	s.wg.Go(func() { s.exceptionsLoop(ctx) })
	return release
}

// shutdown drains the connections after the listeners closed: see Run.
func (s *Server) shutdown() {
	st := s.state.Load()
	grace := orDefault(st.cfg.ShutdownGrace, rules.DefaultShutdownGrace)
	s.mu.Lock()
	s.stopping = true
	gens := s.gens
	s.mu.Unlock()
	s.log.Info("shutting down: connections in flight may finish", "open", s.conns.len(), "grace", grace.String())

	// Idle keep-alive connections close now, busy ones after their
	// response. The HTTP servers still serve connections accepted before
	// the listeners closed, so a client that connected just before is
	// answered, as a SOCKS client is.
	for _, g := range gens {
		g.hs.SetKeepAlivesEnabled(false)
	}
	s.conns.drain()
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-s.conns.idle():
	case <-timer.C:
		s.log.Warn("shutdown: grace period over; closing the connections still open", "open", s.conns.len(), "grace", grace.String())
	}

	s.stop() // tunnels and SOCKS connections see their context end
	s.mu.Lock()
	s.closed = true
	gens = s.gens
	var socksServers []*socks.Server
	for so := range s.socksLive {
		socksServers = append(socksServers, so)
	}
	s.mu.Unlock()
	// Cut what is still open first, with a RST (closeAll): the HTTP
	// servers' Close would close their connections with a FIN, and a
	// download cut short would look complete.
	s.conns.closeAll()
	for _, g := range gens {
		g.ln.Close()
		g.hs.Close()
	}
	for _, so := range socksServers {
		so.Close() // ends its connections and waits for them
	}
	s.wg.Wait()
	select { // handlers and tunnels end once their connection is closed
	case <-s.handlers.idle():
	case <-time.After(5 * time.Second):
		s.log.Warn("shutdown: HTTP handlers or tunnels still running after their connections closed")
	}
	st = s.state.Load()
	st.router.CloseIdleConnections()
	st.http.CloseIdleConnections()
}

// accept runs one listener until it is closed, giving each connection to
// handle. When accept fails (out of
// file descriptors: EMFILE, ENFILE) it backs off, up to a second, and logs
// once per episode rather than once per attempt.
func (s *Server) accept(ctx context.Context, ln net.Listener, handle func(net.Conn)) {
	var delay time.Duration
	failures := 0
	idle := make(chan net.Conn) // workers waiting for a connection (see work)
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || ctx.Err() != nil {
				return
			}
			if failures == 0 {
				msg := "accept failed; retrying until it works again"
				if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
					msg = "accept failed: out of file descriptors; retrying until connections close"
				}
				s.log.Error(msg, "addr", ln.Addr().String(), "err", err)
			}
			failures++
			s.log.Debug("accept retry", "addr", ln.Addr().String(), "attempt", failures, "err", err)
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			t := time.NewTimer(delay)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			continue
		}
		if failures > 0 {
			s.log.Info("accept works again", "addr", ln.Addr().String(), "failed_attempts", failures)
			failures = 0
		}
		delay = 0
		select {
		case idle <- c: // a worker that finished its connection takes it
		default:
			s.wg.Go(func() { s.work(ctx, idle, handle, c) })
		}
	}
}

// workerIdle is how long a worker waits for another connection before it
// ends.
const workerIdle = 10 * time.Second

// maxWaiting bounds the workers waiting for a connection. A worker
// carries a direction of its tunnel until the direction ends or parks
// (conn.Inline), so a burst of tunnels that stay open leaves many
// workers behind; beyond maxWaiting they end at once rather than hold
// their grown stacks for workerIdle.
const maxWaiting = 16

// work handles c, then the connections the accept loop hands to it on
// idle, until none came for workerIdle, maxWaiting others wait already
// or ctx ends. Reusing goroutines spares each connection a new goroutine
// and the growth of its stack (runtime.newstack) in the handshake and
// the decision.
func (s *Server) work(ctx context.Context, idle chan net.Conn, handle func(net.Conn), c net.Conn) {
	s.workers.Add(1)
	t := time.NewTimer(workerIdle)
	defer t.Stop()
	for {
		handle(c)
		if s.waiting.Add(1) > maxWaiting {
			s.waiting.Add(-1)
			return
		}
		t.Reset(workerIdle)
		select {
		case c = <-idle:
			s.waiting.Add(-1)
		case <-t.C:
			s.waiting.Add(-1)
			return
		case <-ctx.Done():
			s.waiting.Add(-1)
			return
		}
	}
}

// handle checks the client against `clients` and `limits`, peeks at the
// first byte and gives the connection to the SOCKS or HTTP front end of the
// current state: a CONNECT whose whole head came in the first read is
// served here, on the worker (serveConnect); other HTTP goes to the HTTP
// server. A tunnel started here (SOCKS or CONNECT) runs one of its
// directions on the worker once its handler has returned (conn.Inline),
// outside the handshake's recover, as on a goroutine of the relay's.
func (s *Server) handle(nc net.Conn) {
	if run := s.handshake(nc); run != nil {
		run()
	}
}

// handshake is handle up to the tunnel: it returns the direction of a
// tunnel left to the worker, or nil.
func (s *Server) handshake(nc net.Conn) (then func()) {
	st := s.state.Load()
	client := remoteAddr(nc)
	if !allowedClient(st.clients, client) {
		s.log.Warn("client not in `clients`; connection closed", "client", nc.RemoteAddr().String())
		s.m.reject("clients")
		nc.Close()
		return nil
	}
	lim := st.cfg.Limits
	c := s.conns.add(nc, client, orDefaultInt(lim.MaxConns, rules.DefaultMaxConns), orDefaultInt(lim.PerClient, rules.DefaultPerClient))
	if c.refused {
		s.m.reject(c.limit)
	}
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("panic serving connection", "client", nc.RemoteAddr().String(), "panic", fmt.Sprint(p))
			c.Close()
		}
		if run := c.takeInline(); run != nil {
			go run() // a panic came after the tunnel started
		}
	}()
	if lt := st.cfg.Timeouts.Lifetime; lt > 0 && !c.refused {
		c.closeAfter(lt)
	}
	c.openInline()
	s.serveConn(st, c)
	return c.takeInline()
}

// serveConn peeks at c's first byte and serves it: SOCKS, a CONNECT
// whose whole head came in the first read (serveConnect), or the HTTP
// server. A tunnel it starts may leave a direction to its caller.
func (s *Server) serveConn(st *state, c *conn) {
	hs := orDefault(st.cfg.Timeouts.Handshake, rules.DefaultHandshakeTimeout)
	headBy := time.Now().Add(hs)
	c.SetReadDeadline(headBy)
	first, err := peek(c.Conn)
	if err != nil {
		c.Close() // a client that said nothing in time
		return
	}
	c.prefix = first
	s.count(c, first[0])
	switch first[0] {
	case 0x05, 0x04:
		// The SOCKS front end sets its own handshake deadline first thing
		// (Refuse as ServeConn): the peek's is not cleared in between.
		if c.refused {
			socks.Refuse(c, hs)
			return
		}
		so := st.socks
		s.socksUse(so, 1)
		defer s.socksUse(so, -1)
		so.ServeConn(s.base, c)
	case 'C':
		if !c.refused && s.serveConnect(c) {
			return
		}
		fallthrough
	default:
		if !c.refused && s.servePlainLoop(c) { // a GET or HEAD and those after it: plainloop.go
			return
		}
		// The handshake timeout bounds the whole head, counted from the
		// accept: the HTTP server's ReadHeaderTimeout starts again.
		c.headBy.Store(headBy.UnixNano())
		s.toHTTP(c)
	}
}

// peekBufs are the buffers peek reads into.
var peekBufs = sync.Pool{New: func() any { return new([peekSize]byte) }}

// peekSize bounds the first read of a connection: a SOCKS greeting or a
// CONNECT request's head fits.
const peekSize = 1024

// peek reads what the client sent first: at least one byte, in one read
// when it is there, so that the front end chosen by the first byte parses
// the rest without another read(2). The bytes are replayed (conn.prefix).
func peek(c net.Conn) ([]byte, error) {
	buf := peekBufs.Get().(*[peekSize]byte)
	defer peekBufs.Put(buf)
	for {
		n, err := c.Read(buf[:])
		if n > 0 {
			return append([]byte(nil), buf[:n]...), nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// socksUse counts the connections a state's SOCKS server serves, so that
// shutdown can Close the servers of older states too; a server is
// forgotten (and its state can be collected) with its last connection.
func (s *Server) socksUse(so *socks.Server, delta int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.socksLive == nil {
		s.socksLive = map[*socks.Server]int{}
	}
	if s.socksLive[so] += delta; s.socksLive[so] <= 0 {
		delete(s.socksLive, so)
	}
}

// connKey is the context key of a request's *conn.
type connKey struct{}

// serveHTTP hands a request to the HTTP front end of the current state,
// or answers 503 on a connection beyond a limit.
func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	c, _ := r.Context().Value(connKey{}).(*conn)
	if c != nil && http.ConnState(c.http.Load()) == http.StateClosed {
		// A shutdown's drain closed the connection while it was idle,
		// before its request was marked active (conns.connState): the
		// request goes nowhere, since its answer could not be delivered.
		panic(http.ErrAbortHandler)
	}
	s.handlers.add()
	defer s.handlers.done()
	if c != nil && c.refused {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Connection", "close")
		w.Header().Set("Retry-After", "5")
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, "sluice: too many connections; try again later\n")
		return
	}
	if c != nil && !r.ProtoAtLeast(1, 1) && r.Method != http.MethodHead {
		defer cutCloseDelimited(c, w)
	}
	s.state.Load().http.ServeHTTP(w, r)
}

// cutCloseDelimited resets c when the handler aborted (http.ErrAbortHandler:
// the origin cut the body short) an answer to an HTTP/1.0 request that has
// no Content-Length: net/http's server sends such a body until the
// connection closes, so that its clean close would make the cut answer
// look complete. The panic goes on to the server, which closes c.
func cutCloseDelimited(c *conn, w http.ResponseWriter) {
	p := recover()
	if p == nil {
		return
	}
	if p == http.ErrAbortHandler && w.Header().Get("Content-Length") == "" {
		c.cut()
	}
	panic(p)
}

// generation is one HTTP server with the handshake and idle timeouts of the
// config it was made for. A reload that changes them starts a new one for
// new connections; the old one serves its connections until they end.
type generation struct {
	hs        *http.Server
	ln        *chanListener
	handshake time.Duration
	idle      time.Duration
	open      atomic.Int64 // its connections not yet closed or hijacked
	retired   bool         // no longer given new connections; s.mu
}

// httpServer returns the HTTP server for new connections under timeouts
// to, starting one when the timeouts changed. It returns nil once the
// grace period is over.
func (s *Server) httpServer(to rules.Timeouts) *generation {
	handshake := orDefault(to.Handshake, rules.DefaultHandshakeTimeout)
	idle := orDefault(to.Idle, rules.DefaultIdleTimeout)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	if g := s.gen; g != nil && (s.stopping || g.handshake == handshake && g.idle == idle) {
		return g
	}
	g := &generation{ln: newChanListener(s.addr), handshake: handshake, idle: idle}
	g.hs = &http.Server{
		Handler:           http.HandlerFunc(s.serveHTTP),
		ReadHeaderTimeout: handshake,
		IdleTimeout:       idle,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return proxy.WithBase(s.base) },
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, connKey{}, c)
		},
		ConnState: func(c net.Conn, st http.ConnState) {
			switch st {
			case http.StateNew:
				g.open.Add(1)
			case http.StateHijacked, http.StateClosed:
				g.open.Add(-1)
			}
			s.conns.connState(c, st)
		},
	}
	if s.stopping {
		g.hs.SetKeepAlivesEnabled(false)
	}
	if old := s.gen; old != nil {
		old.retired = true
		old.ln.Close() // its Serve returns; its connections go on
	}
	live := s.gens[:0]
	for _, o := range s.gens {
		if !o.retired || o.open.Load() > 0 {
			live = append(live, o)
		}
	}
	s.gens = append(live, g)
	s.gen = g
	s.wg.Go(func() { _ = g.hs.Serve(g.ln) })
	return g
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

func orDefaultInt(n, def int) int {
	if n <= 0 {
		return def
	}
	return n
}

// inflight counts running work; unlike a sync.WaitGroup it allows add
// while someone waits.
type inflight struct {
	mu   sync.Mutex
	n    int
	zero chan struct{} // closed when n drops to 0
}

func (f *inflight) add() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n == 0 {
		f.zero = make(chan struct{})
	}
	f.n++
}

func (f *inflight) done() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n--; f.n == 0 {
		close(f.zero)
	}
}

// idle returns a channel closed when nothing runs.
func (f *inflight) idle() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n == 0 {
		c := make(chan struct{})
		close(c)
		return c
	}
	return f.zero
}
