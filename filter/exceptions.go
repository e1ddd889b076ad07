package filter

import (
	"slices"
	"time"

	"github.com/sluiceproxy/sluice/rules"
)

// ReasonException is the Reason of a request a temporary exception
// (`sluice allow`) allowed.
const ReasonException = "temporary exception"

// Exceptions are the temporary exceptions (`sluice allow`), consulted
// before every rule. Like the Engine, they are immutable and do no I/O:
// the server reads the state file and swaps in new Exceptions. An
// exception covers nothing from its end on, whoever holds it.
type Exceptions struct {
	list []rules.Exception
}

// NewExceptions returns the exceptions of list, which it keeps.
func NewExceptions(list []rules.Exception) *Exceptions { return &Exceptions{list: list} }

// Len returns how many exceptions x holds, expired ones included.
func (x *Exceptions) Len() int {
	if x == nil {
		return 0
	}
	return len(x.list)
}

// List returns a copy of the exceptions, in order.
func (x *Exceptions) List() []rules.Exception {
	if x == nil {
		return nil
	}
	return slices.Clone(x.list)
}

// Decide returns the allowing decision of the first exception that covers
// req (by host, client, user, and req.Time before its end), routed by via
// (the default route), and true; or false when none covers it. A nil x
// covers nothing.
func (x *Exceptions) Decide(req Request, via string) (Decision, bool) {
	if x == nil {
		return Decision{}, false
	}
	for _, e := range x.list {
		if e.Covers(req.Host, req.Client, req.User, req.Time) {
			return Decision{
				Verdict: Allow, Reason: ReasonException, Via: via,
				Rule: RuleRef{Text: "sluice allow " + e.String(), Pattern: e.Domain},
			}, true
		}
	}
	return Decision{}, false
}

// Live returns x without the exceptions that ended at or before now, and
// those; x itself when none ended.
func (x *Exceptions) Live(now time.Time) (*Exceptions, []rules.Exception) {
	if x == nil {
		return nil, nil
	}
	var live, ended []rules.Exception
	for _, e := range x.list {
		if now.Before(e.Until) {
			live = append(live, e)
		} else {
			ended = append(ended, e)
		}
	}
	if len(ended) == 0 {
		return x, nil
	}
	return &Exceptions{list: live}, ended
}
