package filter_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice/filter"
	"github.com/sluiceproxy/sluice/rules"
)

// FuzzDecide feeds arbitrary requests to a small engine with every pattern
// kind and condition: Decide must not panic, must be deterministic, and
// must fill a decision consistently.
func FuzzDecide(f *testing.F) {
	cats := map[string]*rules.CategoryList{
		"social": {Name: "social", Block: []string{"facebook.com", "x.com", "com"}, Allow: []string{"ok.x.com"}},
	}
	timed := r(f, "block", "*.night.example")
	timed.Times = []rules.TimeWindow{{From: 22 * 60, To: 6 * 60}}
	users := r(f, "allow", ".example")
	users.Users, users.Groups = []string{"alice"}, []string{"staff"}
	clients := r(f, "block", "**.corp", "10.0.0.0/8", "::1")
	clients.Clients = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}
	ports := r(f, "block", "exact.example")
	ports.Ports = []rules.PortRange{{Lo: 1, Hi: 1024}}
	s := newSet(rules.Block, cats, timed, users, clients, ports,
		r(f, "block", "category:social", "a?[0-9].{x,y}.*"), r(f, "allow", ".example", "ads.*"), r(f, "allow"))
	s.Config.Groups = map[string][]string{"staff": {"bob"}}
	e, err := filter.Compile(s)
	if err != nil {
		f.Fatal(err)
	}
	ref := newReference(f, s)
	f.Add("www.facebook.com", "10.0.0.1", "alice", uint16(443), int64(0))
	f.Add("a.b.night.example", "192.0.2.9", "", uint16(80), int64(1772488800))
	f.Add("::1", "::ffff:192.0.2.1", "bob", uint16(22), int64(-1))
	f.Add("", "", "", uint16(0), int64(0))
	f.Add("..", "bad", "\x00", uint16(65535), int64(1<<40))
	f.Add("[fe80::1%eth0]", "1.2.3.4", "x", uint16(1), int64(99))
	f.Fuzz(func(t *testing.T, host, client, user string, port uint16, unix int64) {
		req := filter.Request{Host: host, User: user, Port: port}
		req.Client, _ = netip.ParseAddr(client)
		if unix != 0 {
			req.Time = time.Unix(unix, 0).UTC()
		}
		d := e.Decide(req)
		if again := e.Decide(req); again != d {
			t.Fatalf("Decide not deterministic: %+v then %+v", d, again)
		}
		got := want{d.Verdict, d.Rule.Index, d.Rule.Pattern, d.Category}
		if w := ref.decide(req); got != w {
			t.Fatalf("Decide(%+v) = %+v, reference says %+v", req, got, w)
		}
		switch {
		case d.Reason == filter.ReasonInvalid:
			if host != "" || d.Verdict != filter.Block {
				t.Fatalf("invalid destination for %q: %+v", host, d)
			}
		case d.Default:
			if d.Rule.Index != 0 || d.Reason != filter.ReasonDefault || d.Verdict != filter.Block {
				t.Fatalf("bad default decision %+v", d)
			}
		default:
			if d.Rule.Index < 1 || d.Rule.Index > e.Rules() || d.Rule.Line == 0 {
				t.Fatalf("decision without a rule: %+v", d)
			}
			if (d.Verdict == filter.Allow) != (d.Reason == filter.ReasonAllowed) {
				t.Fatalf("reason does not fit the verdict: %+v", d)
			}
		}
	})
}
