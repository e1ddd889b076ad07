package server

import (
	"errors"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice/filter"
	"github.com/sluiceproxy/sluice/proxy/dial"
	"github.com/sluiceproxy/sluice/rules"
)

func compileGuard(t *testing.T, src string, own ...string) *guard {
	t.Helper()
	cfg, err := rules.Parse("sluice.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	set, err := rules.LoadSet(cfg)
	if err != nil {
		t.Fatal(err)
	}
	eng, err := filter.Compile(set)
	if err != nil {
		t.Fatal(err)
	}
	var p atomic.Pointer[[]netip.AddrPort]
	lns := make([]netip.AddrPort, len(own))
	for i, o := range own {
		lns[i] = netip.MustParseAddrPort(o)
	}
	p.Store(&lns)
	g := newGuard(&state{cfg: cfg, engine: eng}, &p)
	// Interface addresses are values here, never dialed.
	g.localAddrs = func() []netip.Addr {
		return []netip.Addr{netip.MustParseAddr("192.0.2.7"), netip.MustParseAddr("2001:db8::7")}
	}
	return g
}

// TestGuardOwnListeners: a listener's own address, and on a wildcard
// listener's port every loopback and interface address, is a loop.
func TestGuardOwnListeners(t *testing.T) {
	g := compileGuard(t, "default: allow\ncheck_resolved: false\n", "127.0.0.1:3128", "0.0.0.0:8080", "[::]:9090")
	for _, c := range []struct {
		addr string
		loop bool
	}{
		{"127.0.0.1:3128", true},
		{"127.0.0.2:3128", false}, // the listener is on 127.0.0.1 only
		{"127.0.0.1:3129", false},
		{"127.0.0.5:8080", true},
		{"[::1]:8080", true},
		{"192.0.2.7:8080", true},
		{"[::ffff:192.0.2.7]:8080", true},
		{"192.0.2.8:8080", false},
		{"[2001:db8::7]:9090", true},
		{"127.9.9.9:9090", true},
		{"192.0.2.8:9090", false},
	} {
		req := filter.Request{Host: "x.test", Port: netip.MustParseAddrPort(c.addr).Port(), Time: time.Now()}
		d, err := check(t, g, req, filter.Decision{Verdict: filter.Allow, Default: true}, netip.MustParseAddrPort(c.addr))
		if loop := errors.Is(err, dial.ErrLoop); loop != c.loop || loop && d.Reason != ReasonLoop {
			t.Errorf("%s: %v %+v; want loop %v", c.addr, err, d, c.loop)
		}
	}
}

// TestGuardResolved: an address an IP or CIDR rule blocks for this
// request is refused, naming the rule; a default block or a rule without
// destinations is not the address's doing.
func TestGuardResolved(t *testing.T) {
	src := `
default: block
clients: ["127.0.0.0/8"]
rules:
  - allow: [intranet.test, open.test]
  - block: ["10.0.0.0/8"]
    clients: ["127.0.0.16/28"]
  - block:
    clients: ["127.0.0.32/28"]
  - allow: ["172.16.0.0/12"]
`
	g := compileGuard(t, src)
	allowName := filter.Decision{Verdict: filter.Allow, Rule: filter.RuleRef{Index: 1, Pattern: "intranet.test"}}
	for _, c := range []struct {
		client, addr string
		blocked      bool
		rule         int
	}{
		{"127.0.0.20", "10.1.2.3:80", true, 2},
		{"127.0.0.1", "10.1.2.3:80", false, 0},    // the rule is for other clients
		{"127.0.0.40", "10.1.2.3:80", false, 0},   // rule 3 has no destinations
		{"127.0.0.20", "192.0.2.1:80", false, 0},  // default block: not the address's doing
		{"127.0.0.20", "172.16.0.1:80", false, 0}, // allowed by rule 4
	} {
		req := filter.Request{Client: netip.MustParseAddr(c.client), Host: "intranet.test", Port: 80, Time: time.Now()}
		d, err := check(t, g, req, allowName, netip.MustParseAddrPort(c.addr))
		if blocked := errors.Is(err, dial.ErrBlocked); blocked != c.blocked {
			t.Errorf("%s from %s: %v; want blocked %v", c.addr, c.client, err, c.blocked)
		} else if blocked && (d.Rule.Index != c.rule || d.Reason != ReasonResolved || d.Verdict != filter.Block) {
			t.Errorf("%s from %s: decision %+v", c.addr, c.client, d)
		}
	}
	off := compileGuard(t, "check_resolved: false\n"+src)
	req := filter.Request{Client: netip.MustParseAddr("127.0.0.20"), Host: "intranet.test", Port: 80, Time: time.Now()}
	if _, err := check(t, off, req, allowName, netip.MustParseAddrPort("10.1.2.3:80")); err != nil {
		t.Errorf("check_resolved: false still refuses: %v", err)
	}
}

// TestGuardDenyPrivate: private ranges are refused unless a rule's
// destination list allows the name or the address.
func TestGuardDenyPrivate(t *testing.T) {
	g := compileGuard(t, `
deny_private: true
rules:
  - allow: [wiki.test, "10.9.0.0/16"]
  - allow:
    clients: ["127.0.0.1/32"]
`)
	byDefault := filter.Decision{Verdict: filter.Allow, Default: true}
	byList := filter.Decision{Verdict: filter.Allow, Rule: filter.RuleRef{Index: 1, Pattern: "wiki.test"}}
	byNoList := filter.Decision{Verdict: filter.Allow, Rule: filter.RuleRef{Index: 2}}
	for _, c := range []struct {
		addr    string
		d       filter.Decision
		refused bool
	}{
		{"169.254.169.254:80", byDefault, true},
		{"127.0.0.1:80", byDefault, true},
		{"10.1.2.3:80", byDefault, true},
		{"172.16.0.1:80", byDefault, true},
		{"192.168.1.1:80", byDefault, true},
		{"100.64.0.1:80", byDefault, true},
		{"0.1.2.3:80", byDefault, true},
		{"[fc00::1]:80", byDefault, true},
		{"[fd12::1]:80", byDefault, true},
		{"[fe80::1]:80", byDefault, true},
		{"[::1]:80", byDefault, true},
		{"[::ffff:10.0.0.1]:80", byDefault, true},
		{"10.1.2.3:80", byNoList, true},   // a rule without destinations is no explicit allow
		{"10.1.2.3:80", byList, false},    // the name is listed
		{"10.9.1.1:80", byDefault, false}, // the address is listed
		{"192.0.2.1:80", byDefault, false},
		{"100.128.0.1:80", byDefault, false},
	} {
		req := filter.Request{Client: netip.MustParseAddr("127.0.0.1"), Host: "name.test", Port: 80, Time: time.Now()}
		d, err := check(t, g, req, c.d, netip.MustParseAddrPort(c.addr))
		if refused := err != nil; refused != c.refused || refused && (d.Reason != ReasonPrivate || !errors.Is(err, dial.ErrBlocked)) {
			t.Errorf("%s (%+v): %v %+v; want refused %v", c.addr, c.d.Rule, err, d, c.refused)
		}
	}
}

// TestPolicyUnspecifiedIsLoopback: IP rules see 0.0.0.0 and :: as the
// loopback address they reach.
func TestPolicyUnspecifiedIsLoopback(t *testing.T) {
	g := compileGuard(t, "rules:\n  - block: [\"127.0.0.0/8\", \"::1\"]\n")
	for _, h := range []string{"0.0.0.0", "::"} {
		if d := Decide(g.engine, filter.Request{Host: h, Port: 80, Time: time.Now()}); d.Verdict != filter.Block || d.Rule.Index != 1 {
			t.Errorf("%s: %+v", h, d)
		}
	}
}

// TestGuardDenyPrivateSafeSearch: under deny_private, a safesearch rule
// does not lift the refusal of a private address for the enforcement host
// it dials (no rule named that host), while an allow rule naming the host
// does.
func TestGuardDenyPrivateSafeSearch(t *testing.T) {
	g := compileGuard(t, "deny_private: true\nrules:\n  - allow: [www.bing.com]\n    clients: [192.0.2.1]\n  - safesearch: {bing: strict}\n")
	priv := netip.MustParseAddrPort("10.1.2.3:443")
	req := filter.Request{Host: "www.bing.com", Port: 443, Client: netip.MustParseAddr("198.51.100.1")}
	d := g.engine.Decide(req)
	if d.Enforce != "strict.bing.com" {
		t.Fatalf("decision %+v, want the safesearch rule", d)
	}
	if _, err := check(t, g, req, d, priv); !errors.Is(err, dial.ErrBlocked) {
		t.Errorf("safesearch to a private address: %v, want ErrBlocked", err)
	}
	req.Client = netip.MustParseAddr("192.0.2.1")
	d = g.engine.Decide(req)
	if _, err := check(t, g, req, d, priv); err != nil {
		t.Errorf("explicit allow of www.bing.com to a private address: %v", err)
	}
}

// check calls g.Check with req and d and returns its decision as a value
// (zero when it allows): a refusal must come with a decision, a pass
// without one.
func check(t *testing.T, g *guard, req filter.Request, d filter.Decision, ap netip.AddrPort) (filter.Decision, error) {
	t.Helper()
	rd, err := g.Check(&req, &d, ap)
	switch {
	case err != nil && rd == nil:
		t.Errorf("%s: refused (%v) without a decision", ap, err)
	case err == nil && rd != nil:
		t.Errorf("%s: allowed with a decision %+v", ap, *rd)
	}
	if rd == nil {
		return filter.Decision{}, err
	}
	return *rd, err
}

// TestSameAddr: a host is the address when it is written as a.String()
// writes it, and telling so allocates nothing.
func TestSameAddr(t *testing.T) {
	for _, c := range []struct {
		host string
		a    string
		want bool
	}{
		{"127.0.0.1", "127.0.0.1", true},
		{"127.0.0.2", "127.0.0.1", false},
		{"a.test", "127.0.0.1", false},
		{"::1", "::1", true},
		{"0:0::1", "::1", false}, // not as a.String() writes it: decided again, as before
		{"fe80::1%eth0", "fe80::1%eth0", true},
		{"", "127.0.0.1", false},
	} {
		if got := sameAddr(c.host, netip.MustParseAddr(c.a)); got != c.want {
			t.Errorf("sameAddr(%q, %s) = %v", c.host, c.a, got)
		}
	}
	a := netip.MustParseAddr("192.0.2.10")
	if n := testing.AllocsPerRun(100, func() { sameAddr("192.0.2.10", a) }); n != 0 {
		t.Errorf("%.0f allocations", n)
	}
}

// TestGuardCheckCost: checking an allowed IP-literal target's address
// under check_resolved and deny_private allocates nothing.
func TestGuardCheckCost(t *testing.T) {
	g := compileGuard(t, "check_resolved: true\ndeny_private: true\ndefault: allow\nrules:\n  - block: [192.0.2.0/24]\n", "127.0.0.1:3128")
	eng := g.engine
	req := filter.Request{Client: netip.MustParseAddr("127.0.0.1"), Host: "198.51.100.7", Port: 443}
	d := eng.Decide(req)
	ap := netip.MustParseAddrPort("198.51.100.7:443")
	if n := testing.AllocsPerRun(100, func() {
		if rd, err := g.Check(&req, &d, ap); rd != nil || err != nil {
			t.Fatal(rd, err)
		}
	}); n != 0 {
		t.Errorf("%.0f allocations per check", n)
	}
	blocked := netip.MustParseAddrPort("192.0.2.1:443")
	if rd, err := g.Check(&req, &d, blocked); rd == nil || err == nil || rd.Reason != ReasonResolved {
		t.Errorf("a blocked address: %v, %v", rd, err)
	}
}
