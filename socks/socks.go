// Package socks is Sluice's SOCKS front end: SOCKS5 (RFC 1928) with
// username/password authentication (RFC 1929), and SOCKS4 / SOCKS4a CONNECT.
//
// Every request is decided by the Policy before anything is dialed. A
// destination given as a name goes to the Policy and to the Dial hook as that
// name: this package never resolves a name in order to decide. Each failure
// gets its own reply code (see replyFor), and the tunnel after a successful
// reply is spliced by proxy/relay, the same code the HTTP front end uses.
package socks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluiceproxy/sluice/filter"
	"github.com/sluiceproxy/sluice/proxy/accesslog"
	"github.com/sluiceproxy/sluice/proxy/dial"
	"github.com/sluiceproxy/sluice/proxy/observe"
	"github.com/sluiceproxy/sluice/proxy/sniff/sniffpolicy"
)

// Policy decides whether a request may pass. *filter.Engine implements it.
type Policy interface {
	Decide(filter.Request) filter.Decision
}

// Authenticator checks a user name and password (RFC 1929). Implementations
// must be safe for concurrent use.
type Authenticator interface {
	// Authenticate reports whether password is user's and, when it is,
	// the user's directory groups (Sluice group names; nil for users
	// without any).
	Authenticate(client netip.Addr, user, password string) (groups []string, ok bool)
}

// Defaults for the zero fields of Server.
const (
	// DefaultHandshakeTimeout bounds accept-to-request when HandshakeTimeout is zero.
	DefaultHandshakeTimeout = 30 * time.Second
	// DefaultIdleTimeout closes quiet tunnels when IdleTimeout is zero.
	DefaultIdleTimeout = 5 * time.Minute
	// DefaultDialTimeout bounds the fallback dialer used when Dial is nil.
	DefaultDialTimeout = 10 * time.Second
	// DefaultMaxUDPPerClient bounds UDP associations per client IP when MaxUDPPerClient is zero.
	DefaultMaxUDPPerClient = 8
)

// Server is a SOCKS5 and SOCKS4a server. Its fields must not change once it
// serves. The zero Server blocks every request.
type Server struct {
	// Policy decides every request and every UDP datagram.
	// If nil, every request is blocked.
	Policy Policy

	// Guard decides, at dial time, each address a direct dial to an allowed
	// target is about to connect to: req and d are the request and its
	// allowing decision, which Guard must not modify. A non-nil error
	// (wrapping dial.ErrLoop or dial.ErrBlocked) refuses the address (reply
	// 0x02), and the returned decision is what the access line reports; it
	// returns nil, nil for an address that may be dialed. It reaches the
	// dialer in the dial's context (dial.WithCheck). If nil, addresses are
	// not checked.
	Guard func(req *filter.Request, d *filter.Decision, addr netip.AddrPort) (*filter.Decision, error)

	// Dial opens the connection to an allowed target. route is the
	// decision's Via; addr is "host:port" where host is the normalized name
	// as the client sent it, or an IP literal. If nil, a net.Dialer with a
	// 10 s timeout is used.
	Dial func(ctx context.Context, route, network, addr string) (net.Conn, error)

	// Auth checks SOCKS5 credentials. If nil, method 0x00 (no
	// authentication) is offered. If set, method 0x02 is required and
	// SOCKS4/4a clients, which cannot send a password, are refused.
	Auth Authenticator

	// Observe gets each connection once, when its access line is written
	// (for metrics; see observe.go). It must not block. If nil, nothing is
	// reported.
	Observe func(observe.Access)

	// UDP allows UDP ASSOCIATE. Default false: the command is answered 0x07.
	UDP bool

	// MaxUDPPerClient bounds the UDP associations one client IP holds at
	// once. Zero means 8.
	MaxUDPPerClient int

	// Access gets the access record of every connection. If nil, the
	// records go to Logger as JSON "access" lines.
	Access func(*accesslog.Record)
	// Logger gets the access lines when Access is nil, and the front
	// end's own errors. If nil, nothing is logged.
	Logger *slog.Logger

	// HandshakeTimeout bounds the time from accept to a complete request.
	// Zero means 30 s.
	HandshakeTimeout time.Duration

	// IdleTimeout closes a tunnel or UDP association with no traffic for
	// this long. Zero means 5 min.
	IdleTimeout time.Duration

	// Now returns the current time for filter.Request.Time. If nil, time.Now.
	Now func() time.Time

	// Sniff says which CONNECT tunnels are answered before dialing so that
	// their first bytes (TLS SNI, HTTP Host) are decided again. The zero
	// value sniffs nothing.
	Sniff sniffpolicy.Config

	once   sync.Once
	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc

	mu     sync.Mutex
	closed bool
	lns    map[net.Listener]struct{}
	udp    map[netip.Addr]int // live UDP associations per client
	wg     sync.WaitGroup

	// tunParent and tunCtx: see tunnelCtx; under mu.
	tunParent, tunCtx context.Context

	stats counters
}

// Stats counts what a Server did since it was created.
type Stats struct {
	// Conns counts connections served.
	Conns int64
	// Blocked counts TCP requests refused by the Policy.
	Blocked int64
	// Failed counts requests whose dial failed.
	Failed int64
	// UDPAssociations counts UDP associations opened.
	UDPAssociations int64
	// UDPRelayed counts datagrams relayed in either direction.
	UDPRelayed int64
	// UDPBlocked counts client datagrams dropped because the Policy blocked their destination.
	UDPBlocked int64
	// UDPDropped counts datagrams dropped for any other reason: a malformed
	// header, a fragment, an unexpected sender, a failed send.
	UDPDropped int64
}

type counters struct {
	conns, blocked, failed                       atomic.Int64
	udpAssoc, udpRelayed, udpBlocked, udpDropped atomic.Int64
}

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	return Stats{
		Conns:           s.stats.conns.Load(),
		Blocked:         s.stats.blocked.Load(),
		Failed:          s.stats.failed.Load(),
		UDPAssociations: s.stats.udpAssoc.Load(),
		UDPRelayed:      s.stats.udpRelayed.Load(),
		UDPBlocked:      s.stats.udpBlocked.Load(),
		UDPDropped:      s.stats.udpDropped.Load(),
	}
}

func (s *Server) init() {
	s.once.Do(func() {
		s.ctx, s.cancel = context.WithCancel(context.Background())
		s.lns = make(map[net.Listener]struct{})
		s.udp = make(map[netip.Addr]int)
	})
}

// Serve accepts connections on ln and serves each in its own goroutine. It
// returns nil after Close, and the accept error otherwise. Serve does not
// close ln when it returns with an error.
func (s *Server) Serve(ln net.Listener) error {
	s.init()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.lns[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.lns, ln)
		s.mu.Unlock()
	}()
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			return fmt.Errorf("socks: accept: %w", err)
		}
		delay = 0
		if !s.track() {
			c.Close()
			return nil
		}
		go s.serve(s.ctx, c) // which ends with s.wg.Done

	}
}

// ServeConn serves one client connection and closes it. The connection's
// first byte must be the protocol version (0x05 or 0x04); a mixed-port
// listener that peeked it hands a connection that replays it. ServeConn
// returns when the connection is done, or as soon as it has become a
// tunnel: a tunnel runs on goroutines of its own (relay.Start) until it
// ends, ctx is cancelled or the server is closed, and Close waits for it.
func (s *Server) ServeConn(ctx context.Context, c net.Conn) {
	s.init()
	if !s.track() {
		c.Close()
		return
	}
	s.serve(ctx, c) // which ends with s.wg.Done
}

// tunnelCtx returns the context the connections served under parent and
// their tunnels run with, shared by all of them: it ends when parent ends
// or s is closed. A connection then needs no context and cancel func of
// its own, and a tunnel no AfterFunc while it idles. Only
// the first parent seen is shared (the one a server passes to every
// ServeConn, or s's own for Serve); for any other tunnelCtx returns nil
// and the tunnel keeps its connection's context.
func (s *Server) tunnelCtx(parent context.Context) context.Context {
	if parent == s.ctx {
		return parent
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tunParent == nil {
		ctx, cancel := context.WithCancel(parent)
		stop := context.AfterFunc(s.ctx, cancel)
		context.AfterFunc(ctx, func() { stop() })
		s.tunParent, s.tunCtx = parent, ctx
	}
	if !sameContext(s.tunParent, parent) {
		return nil
	}
	return s.tunCtx
}

// sameContext reports whether a and b are the same context; a context
// whose type cannot be compared (no context of the standard library) is
// never the same.
func sameContext(a, b context.Context) bool {
	if !reflect.TypeOf(b).Comparable() {
		return false
	}
	return a == b
}

// Close stops every Serve loop, ends every connection and waits for their
// goroutines to finish. It is safe to call more than once.
func (s *Server) Close() error {
	s.init()
	s.mu.Lock()
	s.closed = true
	var err error
	for ln := range s.lns {
		if e := ln.Close(); e != nil && !errors.Is(e, net.ErrClosed) {
			err = e
		}
	}
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
	return err
}

func (s *Server) track() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	return true
}

func (s *Server) logger() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

func (s *Server) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Server) handshakeTimeout() time.Duration {
	if s.HandshakeTimeout > 0 {
		return s.HandshakeTimeout
	}
	return DefaultHandshakeTimeout
}

func (s *Server) idleTimeout() time.Duration {
	if s.IdleTimeout > 0 {
		return s.IdleTimeout
	}
	return DefaultIdleTimeout
}

func (s *Server) maxUDP() int {
	if s.MaxUDPPerClient > 0 {
		return s.MaxUDPPerClient
	}
	return DefaultMaxUDPPerClient
}

func (s *Server) dial(ctx context.Context, route, network, addr string) (net.Conn, error) {
	if s.Dial != nil {
		return s.Dial(ctx, route, network, addr)
	}
	d := net.Dialer{Timeout: DefaultDialTimeout, KeepAlive: -1}
	return d.DialContext(ctx, network, addr)
}

// guarded returns ctx carrying the client's dial.Identity (for circuit
// isolation) and the dial-time check of an allowed request;
// the first refusing decision is stored in refused.
func (s *Server) guarded(ctx context.Context, req filter.Request, d filter.Decision, refused *atomic.Pointer[filter.Decision]) context.Context {
	ctx = dial.WithIdentity(ctx, dial.Identity{Client: req.Client, User: req.User})
	if s.Guard == nil {
		return ctx
	}
	return dial.WithCheck(ctx, func(ap netip.AddrPort) error {
		rd, err := s.Guard(&req, &d, ap)
		if err != nil {
			refused.CompareAndSwap(nil, filter.OrBlock(rd))
		}
		return err
	})
}

func (s *Server) decide(req filter.Request) filter.Decision {
	if s.Policy == nil {
		return filter.Decision{Verdict: filter.Block, Reason: "no policy configured", Default: true}
	}
	return s.Policy.Decide(req)
}

// replyFor maps a dial error to its SOCKS5 reply code: first the kind of a
// *dial.Error, then the underlying error. A timeout is answered 0x06.
func replyFor(err error) replyCode {
	if k, ok := dialKind(err); ok {
		return k
	}
	var dnsErr *net.DNSError
	switch {
	case errors.As(err, &dnsErr):
		return repHostUnreachable
	case isRefused(err):
		return repConnectionRefused
	case isHostUnreachable(err):
		return repHostUnreachable
	case isNetUnreachable(err):
		return repNetworkUnreachable
	case isTimeout(err):
		return repTTLExpired
	}
	return repGeneralFailure
}

func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, errTimeout) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// clientAddr returns the unmapped IP of a connection's peer.
func clientAddr(c net.Conn) netip.Addr {
	return addrPort(c.RemoteAddr()).Addr().Unmap()
}
