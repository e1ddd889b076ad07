package socks

import (
	"net"
	"strings"

	"github.com/sluiceproxy/sluice/filter"
	"github.com/sluiceproxy/sluice/proxy/observe"
)

// observe reports a connection to the Observe hook. SOCKS4a counts as
// SOCKS4; a.decision is already the guard's refusal when there was one.
func (s *Server) observe(a *access) {
	if s.Observe == nil {
		return
	}
	o := observe.Access{Frontend: observe.SOCKS5, Verdict: observe.None, Up: a.up, Down: a.down, DialErr: a.dialErr}
	if strings.HasPrefix(a.proto, "socks4") {
		o.Frontend = observe.SOCKS4
	}
	if d := a.decision; d != nil {
		o.Verdict, o.Category = observe.Allow, d.Category
		if d.WouldBlock {
			o.WouldBlock = d.Report.Label()
		}
		if d.Verdict != filter.Allow {
			o.Verdict = observe.Block
		}
		o.Host = a.target
		if h, _, err := net.SplitHostPort(a.target); err == nil {
			o.Host = h
		}
	}
	s.Observe(o)
}
