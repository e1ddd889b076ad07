package socks

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/sluiceproxy/sluice/filter"
	"github.com/sluiceproxy/sluice/proxy/dial"
	"github.com/sluiceproxy/sluice/rules"
)

var (
	// ErrUDPDisabled means a client asked for UDP ASSOCIATE while Server.UDP is false.
	ErrUDPDisabled = errors.New("socks: udp associate is disabled")
	// ErrUDPLimit means the client already holds MaxUDPPerClient associations.
	ErrUDPLimit = errors.New("socks: too many udp associations for this client")
)

// maxUDPDestinations bounds the destinations one association remembers.
const maxUDPDestinations = 256

// associate serves UDP ASSOCIATE (RFC 1928 section 7). The relay listens
// on the IP the client reached the server on. Only datagrams from the
// client's IP (and port, once known or when announced) are relayed out, each
// after the Policy allowed its destination; only datagrams from destinations
// the client sent to are relayed back. The association ends with its TCP
// control connection, after IdleTimeout without datagrams, or on Close.
//
// A destination is resolved by the Dial hook with network "udp" (a UDP
// dial sends nothing), so names are resolved only by the dialer and only
// after the Policy allowed them; a route that cannot carry UDP fails that
// dial and the datagram is dropped.
func (s *Server) associate(ctx context.Context, c net.Conn, req request, a *access) {
	if !s.UDP {
		a.err = ErrUDPDisabled
		s.reply5(c, a, repCommandNotSupported, netip.AddrPort{})
		return
	}
	client := clientAddr(c)
	if !s.acquireUDP(client) {
		a.err = ErrUDPLimit
		s.reply5(c, a, repGeneralFailure, netip.AddrPort{})
		return
	}
	defer s.releaseUDP(client)

	local := addrPort(c.LocalAddr()).Addr().Unmap()
	pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(local, 0)))
	if err != nil {
		a.err = fmt.Errorf("socks: udp relay: %w", err)
		s.reply5(c, a, repGeneralFailure, netip.AddrPort{})
		return
	}
	defer pc.Close()
	s.stats.udpAssoc.Add(1)
	a.target = addrPort(pc.LocalAddr()).String()
	c.SetDeadline(time.Time{})
	a.granted = true
	if err := s.reply5(c, a, repSucceeded, addrPort(pc.LocalAddr())); err != nil {
		a.err = err
		return
	}

	// The control connection carries nothing more; its end ends the association.
	done := make(chan struct{})
	go func() {
		defer close(done)
		io.Copy(io.Discard, c)
		pc.Close()
	}()
	defer func() { c.Close(); <-done }()

	u := &udpRelay{s: s, ctx: ctx, pc: pc, a: a, client: client, dst: make(map[string]netip.AddrPort), back: make(map[netip.AddrPort]struct{})}
	if p := req.port; p != 0 {
		u.wantPort = p
	}
	a.err = u.run()
}

func (s *Server) acquireUDP(client netip.Addr) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.udp[client] >= s.maxUDP() {
		return false
	}
	s.udp[client]++
	return true
}

func (s *Server) releaseUDP(client netip.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.udp[client]--; s.udp[client] <= 0 {
		delete(s.udp, client)
	}
}

type udpRelay struct {
	s        *Server
	ctx      context.Context
	pc       *net.UDPConn
	a        *access
	client   netip.Addr                  // the control connection's peer IP
	wantPort uint16                      // port announced in the request, or 0
	from     netip.AddrPort              // the client's UDP address, once known
	dst      map[string]netip.AddrPort   // resolved destinations by host:port
	back     map[netip.AddrPort]struct{} // destinations whose replies go back
}

func (u *udpRelay) run() error {
	buf := make([]byte, 64*1024)
	out := make([]byte, 0, 64*1024+262)
	idle := u.s.idleTimeout()
	for {
		u.pc.SetReadDeadline(time.Now().Add(idle))
		n, from, err := u.pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) || u.ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, errTimeout) {
				return errors.New("socks: udp association idle")
			}
			return fmt.Errorf("socks: udp relay: %w", err)
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		switch {
		case u.isClient(from):
			u.from = from
			u.outbound(buf[:n])
		case u.from.IsValid():
			if _, ok := u.back[from]; ok {
				out = append(appendUDPHeader(out[:0], from), buf[:n]...)
				u.s.stats.udpRelayed.Add(1) // before the send, so a client that got it sees it counted
				if _, err := u.pc.WriteToUDPAddrPort(out, u.from); err != nil {
					u.s.stats.udpRelayed.Add(-1)
					u.drop()
					continue
				}
				u.a.down += int64(n)
				continue
			}
			u.drop()
		default:
			u.drop()
		}
	}
}

// isClient reports whether a datagram from src comes from the client.
func (u *udpRelay) isClient(src netip.AddrPort) bool {
	if u.from.IsValid() {
		return src == u.from
	}
	return src.Addr() == u.client && (u.wantPort == 0 || src.Port() == u.wantPort)
}

func (u *udpRelay) drop() {
	u.a.udpDrop++
	u.s.stats.udpDropped.Add(1)
}

// outbound decides and forwards one datagram from the client.
func (u *udpRelay) outbound(b []byte) {
	host, _, port, payload, err := parseUDPHeader(b)
	if err != nil {
		u.drop()
		return
	}
	host, err = rules.NormalizeHost(host)
	if err != nil {
		u.drop()
		return
	}
	req := filter.Request{Client: u.client, User: u.a.user, Groups: u.a.groups, Host: host, Port: port, Time: u.s.now()}
	d := u.s.decide(req)
	if d.Verdict != filter.Allow {
		u.a.udpBlock++
		u.s.stats.udpBlocked.Add(1)
		return
	}
	key := net.JoinHostPort(host, strconv.Itoa(int(port)))
	dst, ok := u.dst[key]
	if !ok {
		if len(u.dst) >= maxUDPDestinations {
			u.drop()
			return
		}
		var refused atomic.Pointer[filter.Decision]
		if dst, ok = u.resolve(u.s.guarded(u.ctx, req, d, &refused), d.Via, dial.Redirect(key, d.Enforce)); !ok {
			if refused.Load() != nil {
				u.a.udpBlock++
				u.s.stats.udpBlocked.Add(1)
				return
			}
			u.drop()
			return
		}
		u.dst[key] = dst
		u.back[dst] = struct{}{}
	}
	u.s.stats.udpRelayed.Add(1)
	if _, err := u.pc.WriteToUDPAddrPort(payload, dst); err != nil {
		u.s.stats.udpRelayed.Add(-1)
		u.drop()
		return
	}
	u.a.up += int64(len(payload))
}

// resolve finds the address of an allowed destination through the Dial hook.
// ctx carries the dial-time check of the datagram's decision.
func (u *udpRelay) resolve(ctx context.Context, route, addr string) (netip.AddrPort, bool) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := u.s.dial(ctx, route, "udp", addr)
	if err != nil {
		return netip.AddrPort{}, false
	}
	ap := addrPort(conn.RemoteAddr())
	conn.Close()
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	return ap, ap.IsValid() && ap.Addr().IsValid()
}
