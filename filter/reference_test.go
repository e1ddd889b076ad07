package filter_test

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/glob"

	"github.com/sluiceproxy/sluice/filter"
	"github.com/sluiceproxy/sluice/filter/filtertest"
	"github.com/sluiceproxy/sluice/rules"
)

// reference is the rule semantics written the slow, obvious way: every
// rule, every pattern, in order. The engine must agree with it.
type reference struct {
	set   *rules.Set
	globs map[string]*glob.Pattern
	block map[string]map[string]bool // category -> domain set
	allow map[string]map[string]bool
}

func newReference(t testing.TB, set *rules.Set) *reference {
	ref := &reference{set: set, globs: map[string]*glob.Pattern{},
		block: map[string]map[string]bool{}, allow: map[string]map[string]bool{}}
	for _, r := range set.Config.Rules {
		for _, p := range r.Dests {
			if p.Kind == rules.Glob {
				ref.globs[p.Host] = glob.MustCompile(p.Host, '.')
			}
		}
	}
	for name, l := range set.Categories {
		ref.block[name], ref.allow[name] = map[string]bool{}, map[string]bool{}
		for _, d := range l.Block {
			ref.block[name][d] = true
		}
		for _, d := range l.Allow {
			ref.allow[name][d] = true
		}
	}
	return ref
}

func unbracket(h string) string { return strings.TrimSuffix(strings.TrimPrefix(h, "["), "]") }

// suffixes returns host and its parent domains; an IP literal has none.
func suffixes(host string) []string {
	if _, err := netip.ParseAddr(unbracket(host)); err == nil {
		return []string{host}
	}
	var out []string
	for s := host; s != ""; {
		out = append(out, s)
		_, rest, ok := strings.Cut(s, ".")
		if !ok {
			break
		}
		s = rest
	}
	return out
}

func (ref *reference) matches(p rules.Pattern, host string) bool {
	switch p.Kind {
	case rules.Exact:
		return host == p.Host
	case rules.Suffix:
		for _, s := range suffixes(host) {
			if s == p.Host {
				return true
			}
		}
	case rules.Glob:
		return ref.globs[p.Host].Match(host)
	case rules.Category:
		in := false
		for _, s := range suffixes(host) {
			if ref.allow[p.Host][s] {
				return false
			}
			in = in || ref.block[p.Host][s]
		}
		return in
	case rules.CIDR:
		a, err := netip.ParseAddr(unbracket(host))
		return err == nil && p.Prefix.Contains(a.Unmap())
	}
	return false
}

func (ref *reference) admits(r rules.Rule, req filter.Request) bool {
	if len(r.Clients) > 0 {
		ok := false
		for _, p := range r.Clients {
			ok = ok || req.Client.IsValid() && p.Contains(req.Client.Unmap())
		}
		if !ok {
			return false
		}
	}
	if len(r.Ports) > 0 {
		ok := false
		for _, p := range r.Ports {
			ok = ok || p.Contains(req.Port)
		}
		if !ok {
			return false
		}
	}
	if len(r.Users) > 0 && (req.User == "" || !contains(r.Users, req.User)) {
		return false
	}
	if len(r.Groups) > 0 {
		ok := false
		for _, g := range r.Groups {
			ok = ok || req.User != "" && contains(ref.set.Config.Groups[g], req.User)
		}
		if !ok {
			return false
		}
	}
	if len(r.Times) > 0 {
		ok := false
		for _, w := range r.Times {
			ok = ok || !req.Time.IsZero() && windowContains(w, req.Time)
		}
		if !ok {
			return false
		}
	}
	return true
}

// windowContains is the schedule rule: [From, To) in minutes, in t's own
// location; a window with To < From wraps past midnight and belongs to the
// day it starts on.
func windowContains(w rules.TimeWindow, t time.Time) bool {
	m := t.Hour()*60 + t.Minute()
	day := t.Weekday()
	has := func(d time.Weekday) bool { return w.Days == 0 || w.Days&(1<<d) != 0 }
	switch {
	case w.From <= w.To:
		return has(day) && w.From <= m && m < w.To
	case m >= w.From:
		return has(day)
	case m < w.To:
		return has((day + 6) % 7)
	}
	return false
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// decide returns the verdict, rule index, pattern text and category.
func (ref *reference) decide(req filter.Request) want {
	if req.Host == "" {
		return want{verdict: filter.Block}
	}
	for _, r := range ref.set.Config.Rules {
		if !ref.admits(r, req) {
			continue
		}
		v := filter.Block
		if r.Action == rules.Allow {
			v = filter.Allow
		}
		if len(r.Dests) == 0 {
			return want{v, r.Index, "", ""}
		}
		for _, p := range r.Dests {
			if ref.matches(p, req.Host) {
				w := want{v, r.Index, p.Text, ""}
				if p.Kind == rules.Category {
					w.cat = p.Host
				}
				return w
			}
		}
	}
	if ref.set.Config.Default == rules.Block {
		return want{verdict: filter.Block}
	}
	return want{verdict: filter.Allow}
}

func agree(t *testing.T, e *filter.Engine, ref *reference, req filter.Request) {
	t.Helper()
	d := e.Decide(req)
	got := want{d.Verdict, d.Rule.Index, d.Rule.Pattern, d.Category}
	if w := ref.decide(req); got != w {
		t.Errorf("Decide(%+v) = %+v, reference says %+v", req, got, w)
	}
}

func TestAgainstReference(t *testing.T) {
	set := filtertest.Set(filtertest.Options{Seed: 11, Domains: 20_000, Categories: 12, Globs: 400})
	// Conditions on a few rules, so that the walk past them is tested too.
	rs := set.Config.Rules
	rs[2].Ports = []rules.PortRange{{Lo: 443, Hi: 443}}
	rs[3].Users = []string{"alice"}
	rs[4].Times = []rules.TimeWindow{{From: 8 * 60, To: 17 * 60}}
	e := mustCompile(t, set)
	ref := newReference(t, set)
	hosts := filtertest.Hosts(set, 4000, 12)
	hosts = append(hosts, "10.1.2.3", "fd00::1", "intranet.example", "a.intranet.example", "com", "co.uk")
	clients := []netip.Addr{{}, netip.MustParseAddr("10.9.9.9"), netip.MustParseAddr("192.0.2.1")}
	for i, h := range hosts {
		agree(t, e, ref, filter.Request{
			Host: h, Client: clients[i%3], Port: []uint16{443, 80}[i%2], User: []string{"", "alice", "bob"}[i%3],
			Time: time.Date(2026, 3, 2, 6+i%14, 0, 0, 0, time.UTC),
		})
	}
}
