package server

import (
	"fmt"
	"net"

	"github.com/sluiceproxy/sluice/proxy"
	"github.com/sluiceproxy/sluice/proxy/dial"
	"github.com/sluiceproxy/sluice/proxy/observe"
	"github.com/sluiceproxy/sluice/proxy/transparent"
	"github.com/sluiceproxy/sluice/rules"
)

// transparentFrontEnd builds the transparent front end of a state: the
// same engine, guard and routes as the other two.
func (s *Server) transparentFrontEnd(st *state) *transparent.Server {
	direct := &dial.Direct{Timeout: st.cfg.Timeouts.Dial, Hosts: st.cfg.Hosts}
	g := newGuard(st, &s.own)
	t := &transparent.Server{
		Policy:      policy{Engine: st.engine, exc: &s.exc, via: st.cfg.Upstream},
		Guard:       g.Check,
		Own:         g.isOwn,
		Dial:        st.router.Dial,
		Lookup:      direct.Lookup,
		VerifyHost:  st.cfg.Transparent.VerifyHost,
		Unnamed:     st.cfg.Transparent.Unnamed,
		BlockPage:   proxy.BlockPage{Template: st.cfg.BlockPage.Template, Contact: st.cfg.BlockPage.Contact, ShowRule: st.cfg.BlockPage.ShowRule},
		IdleTimeout: orDefault(st.cfg.Timeouts.Idle, rules.DefaultIdleTimeout),
		Access:      s.access,
		Logger:      s.log,
	}
	if s.m != nil {
		t.Observe = s.m.observe
	}
	return t
}

// handleTransparent serves a connection accepted by a transparent
// listener: `clients` and `limits` as for any listener, then its original
// destination, then the transparent front end of the current state. The
// worker carries a direction of the tunnel, as in handle.
func (s *Server) handleTransparent(nc net.Conn) {
	if run := s.transparentHandshake(nc); run != nil {
		run()
	}
}

// transparentHandshake is handleTransparent up to the tunnel: it returns
// the direction of a tunnel left to the worker, or nil.
func (s *Server) transparentHandshake(nc net.Conn) (then func()) {
	st := s.state.Load()
	client := remoteAddr(nc)
	if !allowedClient(st.clients, client) {
		s.log.Warn("client not in `clients`; connection closed", "client", nc.RemoteAddr().String(), "listener", "transparent")
		s.m.reject("clients")
		nc.Close()
		return
	}
	orig, err := transparent.Destination(nc)
	lim := st.cfg.Limits
	c := s.conns.add(nc, client, orDefaultInt(lim.MaxConns, rules.DefaultMaxConns), orDefaultInt(lim.PerClient, rules.DefaultPerClient))
	if c.refused {
		s.m.reject(c.limit)
		c.Close() // no handshake to answer a refusal in
		return
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
	if lt := st.cfg.Timeouts.Lifetime; lt > 0 {
		c.closeAfter(lt)
	}
	c.track(s.m.opened(observe.Transparent))
	if err != nil {
		s.log.Warn("transparent: connection not redirected by the firewall; closed", "client", nc.RemoteAddr().String(), "err", err)
	}
	c.openInline()
	st.transp.ServeConn(s.base, c, orig)
	return c.takeInline()
}
