package proxy

import (
	"github.com/sluiceproxy/sluice/filter"
	"github.com/sluiceproxy/sluice/proxy/observe"
)

// observe reports x to the Observe hook, with the final verdict: a
// request the Guard refused at dial time counts as blocked, not as a
// failed dial.
func (x *exchange) observe() {
	if x.s.Observe != nil {
		x.s.Observe(x.access())
	}
}

// access is x's report to the Observe hook.
func (x *exchange) access() observe.Access {
	a := observe.Access{Frontend: observe.HTTP, Verdict: observe.None, Up: x.up, Down: x.down}
	if x.decided {
		d := x.d
		if rd := x.refused.Load(); rd != nil {
			d = *rd
		} else {
			a.DialErr = x.dialErr
		}
		a.Verdict, a.Category, a.Host = observe.Allow, d.Category, x.req.Host
		if d.WouldBlock {
			a.WouldBlock = d.Report.Label()
		}
		if d.Verdict != filter.Allow {
			a.Verdict = observe.Block
		}
	}
	return a
}
