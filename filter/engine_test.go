package filter_test

import (
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice/filter"
	"github.com/sluiceproxy/sluice/filter/filtertest"
	"github.com/sluiceproxy/sluice/rules"
)

// pat builds a pattern the way rules.ParsePattern does, for the kinds the
// tests use, without depending on it.
func pat(t testing.TB, s string) rules.Pattern {
	t.Helper()
	p := rules.Pattern{Text: s}
	switch {
	case strings.HasPrefix(s, rules.CategoryPrefix):
		p.Kind, p.Host = rules.Category, strings.TrimPrefix(s, rules.CategoryPrefix)
	case strings.Contains(s, "/"):
		p.Kind, p.Prefix = rules.CIDR, netip.MustParsePrefix(s).Masked()
	case strings.ContainsAny(s, "*?[]{}"):
		p.Kind, p.Host = rules.Glob, s
	case strings.HasPrefix(s, "."):
		p.Kind, p.Host = rules.Suffix, s[1:]
	default:
		if a, err := netip.ParseAddr(s); err == nil {
			p.Kind, p.Prefix = rules.CIDR, netip.PrefixFrom(a, a.BitLen())
			break
		}
		p.Kind, p.Host = rules.Exact, s
	}
	return p
}

// r builds a rule: r(t, "block", "a.com", ".b.com").
func r(t testing.TB, action string, dests ...string) rules.Rule {
	t.Helper()
	rl := rules.Rule{Action: rules.Action(action), Text: action + ": [" + strings.Join(dests, ", ") + "]"}
	for _, d := range dests {
		rl.Dests = append(rl.Dests, pat(t, d))
	}
	return rl
}

// newSet numbers the rules (index and line) and wraps them in a Set.
func newSet(def rules.Action, cats map[string]*rules.CategoryList, rs ...rules.Rule) *rules.Set {
	for i := range rs {
		rs[i].Index = i + 1
		rs[i].Line = 10 + i
	}
	if cats == nil {
		cats = map[string]*rules.CategoryList{}
	}
	return &rules.Set{Config: &rules.Config{File: "/etc/sluice.yaml", Default: def, Rules: rs}, Categories: cats}
}

func mustCompile(t testing.TB, s *rules.Set) *filter.Engine {
	t.Helper()
	e, err := filter.Compile(s)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return e
}

// want is the expected part of a decision: verdict, rule index (0 for the
// default), the pattern text and the category.
type want struct {
	verdict filter.Verdict
	rule    int
	pattern string
	cat     string
}

func check(t *testing.T, e *filter.Engine, req filter.Request, w want) {
	t.Helper()
	d := e.Decide(req)
	if d.Verdict != w.verdict || d.Rule.Index != w.rule || d.Rule.Pattern != w.pattern || d.Category != w.cat {
		t.Errorf("Decide(%+v) = %v rule %d pattern %q category %q (%s); want %v rule %d pattern %q category %q",
			req, d.Verdict, d.Rule.Index, d.Rule.Pattern, d.Category, d.Reason, w.verdict, w.rule, w.pattern, w.cat)
	}
	if d.Default != (w.rule == 0) {
		t.Errorf("Decide(%q).Default = %v, want %v", req.Host, d.Default, w.rule == 0)
	}
}

var (
	block = filter.Block
	allow = filter.Allow
)

func TestPatternKinds(t *testing.T) {
	cats := map[string]*rules.CategoryList{
		"social": {Name: "social", Block: []string{"facebook.com", "tiktok.com", "x.com"},
			Allow: []string{"developers.facebook.com"}},
		"ads": {Name: "ads", Block: []string{"doubleclick.net", "ads.example.org", "facebook.com"}},
	}
	e := mustCompile(t, newSet(rules.Allow, cats,
		r(t, "block", "exact.example"),                            // 1
		r(t, "block", ".suffix.example"),                          // 2
		r(t, "block", "*.glob.example", "ad?.**.example.net"),     // 3
		r(t, "block", "category:social"),                          // 4
		r(t, "block", "10.0.0.0/8", "2001:db8::/32", "192.0.2.7"), // 5
		r(t, "allow", "category:ads"),                             // 6
		r(t, "block", "tracker.*", "{a,b}x.*.test"),               // 7: no literal suffix; only a TLD
	))
	tests := []struct {
		host string
		want want
	}{
		{"exact.example", want{block, 1, "exact.example", ""}},
		{"www.exact.example", want{allow, 0, "", ""}},
		{"suffix.example", want{block, 2, ".suffix.example", ""}},
		{"a.b.suffix.example", want{block, 2, ".suffix.example", ""}},
		{"a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r.s.suffix.example", want{block, 2, ".suffix.example", ""}}, // more suffixes than one chunk
		{"a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r.s.t.u.v.w.x.y.z.facebook.com", want{block, 4, "category:social", "social"}},
		{"xsuffix.example", want{allow, 0, "", ""}},
		{"a.glob.example", want{block, 3, "*.glob.example", ""}},
		{"a.b.glob.example", want{allow, 0, "", ""}}, // '*' is one label
		{"glob.example", want{allow, 0, "", ""}},
		{"ads.x.y.example.net", want{block, 3, "ad?.**.example.net", ""}},
		{"adx.y.example.net", want{block, 3, "ad?.**.example.net", ""}},
		{"adsx.y.example.net", want{allow, 0, "", ""}},
		{"facebook.com", want{block, 4, "category:social", "social"}},
		{"www.facebook.com", want{block, 4, "category:social", "social"}},
		{"developers.facebook.com", want{allow, 6, "category:ads", "ads"}}, // exception in social, still in ads
		{"api.developers.facebook.com", want{allow, 6, "category:ads", "ads"}},
		{"x.com", want{block, 4, "category:social", "social"}},
		{"com", want{allow, 0, "", ""}},
		{"notx.com", want{allow, 0, "", ""}},
		{"doubleclick.net", want{allow, 6, "category:ads", "ads"}},
		{"ads.example.org", want{allow, 6, "category:ads", "ads"}},
		{"example.org", want{allow, 0, "", ""}},
		{"10.1.2.3", want{block, 5, "10.0.0.0/8", ""}},
		{"11.1.2.3", want{allow, 0, "", ""}},
		{"192.0.2.7", want{block, 5, "192.0.2.7", ""}},
		{"192.0.2.8", want{allow, 0, "", ""}},
		{"2001:db8::1", want{block, 5, "2001:db8::/32", ""}},
		{"[2001:db8::1]", want{block, 5, "2001:db8::/32", ""}},
		{"2001:db9::1", want{allow, 0, "", ""}},
		{"10.example", want{allow, 0, "", ""}},
		{"tracker.anything", want{block, 7, "tracker.*", ""}},
		{"tracker.a.b", want{allow, 0, "", ""}},
		{"ax.foo.test", want{block, 7, "{a,b}x.*.test", ""}},
		{"cx.foo.test", want{allow, 0, "", ""}},
	}
	for _, tt := range tests {
		check(t, e, filter.Request{Host: tt.host, Port: 443}, tt.want)
	}
}

func TestFirstMatchWins(t *testing.T) {
	e := mustCompile(t, newSet(rules.Block, nil,
		r(t, "allow", "good.bad.example"),
		r(t, "block", ".bad.example"),
		r(t, "allow", ".example", "*.bad.example"),
		r(t, "block", "other.example", ".other.example"), // never reached for other.example
	))
	tests := []struct {
		host string
		want want
	}{
		{"good.bad.example", want{allow, 1, "good.bad.example", ""}},
		{"x.bad.example", want{block, 2, ".bad.example", ""}},
		{"other.example", want{allow, 3, ".example", ""}},
		{"unrelated.test", want{block, 0, "", ""}},
	}
	for _, tt := range tests {
		check(t, e, filter.Request{Host: tt.host}, tt.want)
	}
}

func TestSamePatternInTwoRulesAndFirstPatternReported(t *testing.T) {
	e := mustCompile(t, newSet(rules.Allow, nil,
		r(t, "block", ".a.example", "x.a.example", "*.a.example"),
		r(t, "allow", "x.a.example"),
	))
	// Three patterns of rule 1 match: the first one as written is reported.
	check(t, e, filter.Request{Host: "x.a.example"}, want{block, 1, ".a.example", ""})
}

func TestDefault(t *testing.T) {
	for _, tt := range []struct {
		def  rules.Action
		want filter.Verdict
	}{{"", allow}, {rules.Allow, allow}, {rules.Block, block}} {
		s := newSet(tt.def, nil, r(t, "block", "x.example"))
		s.Config.Upstream = "tor"
		e := mustCompile(t, s)
		d := e.Decide(filter.Request{Host: "y.example"})
		if d.Verdict != tt.want || !d.Default || d.Reason != filter.ReasonDefault || d.Rule != (filter.RuleRef{}) {
			t.Errorf("default %q: got %+v", tt.def, d)
		}
		if wantVia := map[bool]string{true: "tor", false: ""}[tt.want == allow]; d.Via != wantVia {
			t.Errorf("default %q: Via = %q, want %q", tt.def, d.Via, wantVia)
		}
		if e.Default() != tt.want {
			t.Errorf("Default() = %v, want %v", e.Default(), tt.want)
		}
	}
}

func TestInvalidDestination(t *testing.T) {
	e := mustCompile(t, newSet(rules.Allow, nil, r(t, "allow")))
	d := e.Decide(filter.Request{Host: ""})
	if d.Verdict != filter.Block || d.Reason != filter.ReasonInvalid || d.Default {
		t.Errorf("empty host: %+v", d)
	}
}

func TestDecisionFields(t *testing.T) {
	s := newSet(rules.Allow, nil, r(t, "block", ".ads.example"), r(t, "allow", ".ok.example"))
	e := mustCompile(t, s)
	d := e.Decide(filter.Request{Host: "x.ads.example"})
	wantRef := filter.RuleRef{Index: 1, File: "/etc/sluice.yaml", Line: 10, Text: `block: [.ads.example]`, Pattern: ".ads.example"}
	if d.Rule != wantRef || d.Reason != filter.ReasonBlocked || d.Via != "" || d.Default {
		t.Errorf("block: %+v", d)
	}
	if got := d.Rule.String(); got != "rule 1 (sluice.yaml:10)" { // the folder is left out (types.go)
		t.Errorf("RuleRef.String = %q", got)
	}
	d = e.Decide(filter.Request{Host: "ok.example"})
	if d.Verdict != filter.Allow || d.Reason != filter.ReasonAllowed || d.Rule.Index != 2 {
		t.Errorf("allow: %+v", d)
	}
	if e.Rules() != 2 {
		t.Errorf("Rules() = %d", e.Rules())
	}
}

// TestRuleNameAndLabel: a named rule's name reaches the decision; Label,
// which clients see, is the name or "rule N" and never a pattern or a
// config line, while String, for the logs, keeps the config line.
func TestRuleNameAndLabel(t *testing.T) {
	named := r(t, "block", ".social.example", "10.0.0.0/8")
	named.Name = "social media"
	named.Clients = []netip.Prefix{netip.MustParsePrefix("127.0.0.16/28")}
	e := mustCompile(t, newSet(rules.Block, nil, named, r(t, "block", "ads.example")))
	cases := []struct {
		host, label, str string
	}{
		{"www.social.example", "social media", `rule 1 "social media" (sluice.yaml:10)`},
		{"ads.example", "rule 2", "rule 2 (sluice.yaml:11)"},
		{"other.example", "default", "default"},
	}
	for _, c := range cases {
		d := e.Decide(filter.Request{Host: c.host, Client: netip.MustParseAddr("127.0.0.20")})
		if d.Verdict != filter.Block || d.Rule.Label() != c.label || d.Rule.String() != c.str {
			t.Errorf("%s: label %q, string %q; want %q, %q", c.host, d.Rule.Label(), d.Rule.String(), c.label, c.str)
		}
		for _, leak := range []string{"social.example", "10.0.0.0", "127.0.0.16", "sluice.yaml", ":10"} {
			if strings.Contains(d.Rule.Label(), leak) {
				t.Errorf("%s: label %q shows %q", c.host, d.Rule.Label(), leak)
			}
		}
	}
}

func TestVia(t *testing.T) {
	withVia := func(rl rules.Rule, via string) rules.Rule { rl.Via = via; return rl }
	for _, tt := range []struct {
		upstream, host, want string
	}{
		{"", "news.example", "tor"},
		{"office", "news.example", "tor"},
		{"office", "direct.example", "direct"},
		{"office", "plain.example", "office"},
		{"", "plain.example", ""},
		{"office", "other.example", "office"}, // default
		{"office", "blocked.example", ""},     // a block has no route
	} {
		s := newSet(rules.Allow, nil,
			withVia(r(t, "allow", "news.example"), "tor"),
			withVia(r(t, "allow", "direct.example"), "direct"),
			r(t, "allow", "plain.example"),
			r(t, "block", "blocked.example"),
		)
		s.Config.Upstream = tt.upstream
		if got := mustCompile(t, s).Decide(filter.Request{Host: tt.host}).Via; got != tt.want {
			t.Errorf("upstream %q, host %q: Via = %q, want %q", tt.upstream, tt.host, got, tt.want)
		}
	}
}

func TestCategoryExceptions(t *testing.T) {
	cats := map[string]*rules.CategoryList{
		"ads": {Name: "ads", Block: []string{"ads.example", "tracker.example", "cdn.ads.example"},
			Allow: []string{"ok.ads.example", "tracker.example"}},
		"malware": {Name: "malware", Block: []string{"tracker.example"}},
		"empty":   {Name: "empty"},
	}
	e := mustCompile(t, newSet(rules.Allow, cats,
		r(t, "block", "category:ads"),
		r(t, "block", "category:malware"),
		r(t, "block", "category:empty", "category:missing"),
	))
	tests := []struct {
		host string
		want want
	}{
		{"ads.example", want{block, 1, "category:ads", "ads"}},
		{"x.ads.example", want{block, 1, "category:ads", "ads"}},
		{"ok.ads.example", want{allow, 0, "", ""}},   // exception equals the host
		{"a.ok.ads.example", want{allow, 0, "", ""}}, // exception is a parent
		{"cdn.ads.example", want{block, 1, "category:ads", "ads"}},
		{"tracker.example", want{block, 2, "category:malware", "malware"}}, // excepted from ads only
		{"www.tracker.example", want{block, 2, "category:malware", "malware"}},
		{"example", want{allow, 0, "", ""}},
	}
	for _, tt := range tests {
		check(t, e, filter.Request{Host: tt.host}, tt.want)
	}
	got := e.Categories()
	if got["ads"] != 5 || got["malware"] != 1 || got["empty"] != 0 || len(got) != 3 {
		t.Errorf("Categories() = %v", got)
	}
}

func TestCategoryDomainAlsoRulePattern(t *testing.T) {
	// The same name in a category and as a rule pattern shares one index
	// entry; both must keep working.
	cats := map[string]*rules.CategoryList{"c": {Name: "c", Block: []string{"both.example", "x.both.example"}}}
	e := mustCompile(t, newSet(rules.Allow, cats,
		r(t, "allow", "x.both.example", "*.x.both.example"),
		r(t, "block", "category:c"),
		r(t, "block", ".both.example"),
	))
	check(t, e, filter.Request{Host: "x.both.example"}, want{allow, 1, "x.both.example", ""})
	check(t, e, filter.Request{Host: "a.x.both.example"}, want{allow, 1, "*.x.both.example", ""})
	check(t, e, filter.Request{Host: "b.both.example"}, want{block, 2, "category:c", "c"})
}

func TestConditions(t *testing.T) {
	clients := r(t, "block", ".example")
	clients.Clients = []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("2001:db8::/32")}
	ports := r(t, "block", ".example")
	ports.Ports = []rules.PortRange{{Lo: 25, Hi: 25}, {Lo: 8000, Hi: 8100}}
	users := r(t, "allow", ".example")
	users.Users = []string{"alice"}
	groups := r(t, "allow", ".example")
	groups.Groups = []string{"staff", "nobody-group"}
	both := r(t, "allow")
	both.Users, both.Groups = []string{"carol", "dave"}, []string{"staff"}
	s := newSet(rules.Block, nil, clients, ports, users, groups, both)
	s.Config.Groups = map[string][]string{"staff": {"bob", "carol"}}
	e := mustCompile(t, s)

	c10 := netip.MustParseAddr("10.1.2.3")
	tests := []struct {
		name string
		req  filter.Request
		want want
	}{
		{"client in prefix", filter.Request{Client: c10, Host: "a.example"}, want{block, 1, ".example", ""}},
		{"mapped client", filter.Request{Client: netip.MustParseAddr("::ffff:10.1.2.3"), Host: "a.example"}, want{block, 1, ".example", ""}},
		{"v6 client", filter.Request{Client: netip.MustParseAddr("2001:db8::5"), Host: "a.example"}, want{block, 1, ".example", ""}},
		{"client outside", filter.Request{Client: netip.MustParseAddr("10.2.0.1"), Host: "a.example", User: "alice"}, want{allow, 3, ".example", ""}},
		{"invalid client", filter.Request{Host: "a.example", User: "alice"}, want{allow, 3, ".example", ""}},
		{"port single", filter.Request{Host: "a.example", Port: 25}, want{block, 2, ".example", ""}},
		{"port range", filter.Request{Host: "a.example", Port: 8050}, want{block, 2, ".example", ""}},
		{"port outside", filter.Request{Host: "a.example", Port: 8101}, want{block, 0, "", ""}},
		{"user", filter.Request{Host: "a.example", User: "alice"}, want{allow, 3, ".example", ""}},
		{"group member", filter.Request{Host: "a.example", User: "bob"}, want{allow, 4, ".example", ""}},
		{"no user", filter.Request{Host: "a.example"}, want{block, 0, "", ""}},
		{"stranger", filter.Request{Host: "a.example", User: "mallory"}, want{block, 0, "", ""}},
		{"users and groups both", filter.Request{Host: "other.test", User: "carol"}, want{allow, 5, "", ""}},
		{"user but not in group", filter.Request{Host: "other.test", User: "dave"}, want{block, 0, "", ""}},
		{"group but not user", filter.Request{Host: "other.test", User: "bob"}, want{block, 0, "", ""}},
		{"directory group", filter.Request{Host: "a.example", User: "erin", Groups: []string{"other", "nobody-group"}}, want{allow, 4, ".example", ""}},
		{"directory group, no listed member", filter.Request{Host: "other.test", User: "dave", Groups: []string{"staff"}}, want{allow, 5, "", ""}},
		{"directory group of another rule", filter.Request{Host: "a.example", User: "erin", Groups: []string{"other"}}, want{block, 0, "", ""}},
		{"directory group named like a user", filter.Request{Host: "a.example", User: "erin", Groups: []string{"bob"}}, want{block, 0, "", ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { check(t, e, tt.req, tt.want) })
	}
}

func TestTimes(t *testing.T) {
	const mon, fri, sat, sun = 1 << time.Monday, 1 << time.Friday, 1 << time.Saturday, 1 << time.Sunday
	work := r(t, "block", ".social.example")
	work.Times = []rules.TimeWindow{{Days: mon | 1<<time.Tuesday | 1<<time.Wednesday | 1<<time.Thursday | fri, From: 8 * 60, To: 17 * 60}}
	night := r(t, "block", ".games.example")
	night.Times = []rules.TimeWindow{{Days: fri | sat, From: 22 * 60, To: 6 * 60}}
	weekend := r(t, "block", ".work.example")
	weekend.Times = []rules.TimeWindow{{Days: sat | sun, From: 0, To: 24 * 60}}
	e := mustCompile(t, newSet(rules.Allow, nil, work, night, weekend))

	paris, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		paris = time.FixedZone("CET", 3600)
	}
	at := func(day, hh, mm int, loc *time.Location) time.Time {
		return time.Date(2026, 3, day, hh, mm, 0, 0, loc) // 2 March 2026 is a Monday
	}
	tests := []struct {
		name string
		host string
		t    time.Time
		want filter.Verdict
	}{
		{"monday 08:00", "social.example", at(2, 8, 0, time.UTC), block},
		{"monday 16:59", "social.example", at(2, 16, 59, time.UTC), block},
		{"monday 17:00", "social.example", at(2, 17, 0, time.UTC), allow},
		{"monday 07:59", "social.example", at(2, 7, 59, time.UTC), allow},
		{"saturday noon", "social.example", at(7, 12, 0, time.UTC), allow},
		{"own location", "social.example", at(2, 9, 0, paris), block},
		{"utc 07:30 is 08:30 in paris", "social.example", at(2, 7, 30, time.UTC).In(paris), block},
		{"zero time", "social.example", time.Time{}, allow},
		{"friday 23:00", "games.example", at(6, 23, 0, time.UTC), block},
		{"saturday 05:59 (from friday)", "games.example", at(7, 5, 59, time.UTC), block},
		{"saturday 06:00", "games.example", at(7, 6, 0, time.UTC), allow},
		{"sunday 03:00 (from saturday)", "games.example", at(8, 3, 0, time.UTC), block},
		{"monday 03:00 (sunday not listed)", "games.example", at(9, 3, 0, time.UTC), allow},
		{"thursday 23:00", "games.example", at(5, 23, 0, time.UTC), allow},
		{"sunday 23:59", "work.example", at(8, 23, 59, time.UTC), block},
		{"monday 00:00", "work.example", at(9, 0, 0, time.UTC), allow},
	}
	for _, tt := range tests {
		if got := e.Decide(filter.Request{Host: tt.host, Time: tt.t}).Verdict; got != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestCompileErrors(t *testing.T) {
	bad := func(mod func(*rules.Set)) *rules.Set {
		s := newSet(rules.Allow, nil, r(t, "block", "a.example"))
		mod(s)
		return s
	}
	tests := []struct {
		name string
		set  *rules.Set
		want string
	}{
		{"nil set", nil, "filter: nil rule set"},
		{"nil config", &rules.Set{}, "filter: nil rule set"},
		{"bad default", bad(func(s *rules.Set) { s.Config.Default = "maybe" }), `default "maybe"`},
		{"bad action", bad(func(s *rules.Set) { s.Config.Rules[0].Action = "drop" }), `rule 1 (sluice.yaml:10): action "drop"`},
		{"bad glob", bad(func(s *rules.Set) {
			s.Config.Rules[0].Dests = []rules.Pattern{{Kind: rules.Glob, Text: "{a", Host: "{a"}}
		}), `invalid glob "{a"`},
		{"bad cidr", bad(func(s *rules.Set) { s.Config.Rules[0].Dests = []rules.Pattern{{Kind: rules.CIDR, Text: "x"}} }), "invalid CIDR"},
		{"empty host", bad(func(s *rules.Set) { s.Config.Rules[0].Dests = []rules.Pattern{{Kind: rules.Exact, Text: "."}} }), "empty host"},
		{"bad kind", bad(func(s *rules.Set) { s.Config.Rules[0].Dests = []rules.Pattern{{Kind: 99, Text: "x"}} }), "unknown kind"},
	}
	for _, tt := range tests {
		_, err := filter.Compile(tt.set)
		if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "filter: ") {
			t.Errorf("%s: err = %v, want one containing %q", tt.name, err, tt.want)
		}
	}
}

func TestCompileKeepsSetUnchanged(t *testing.T) {
	rl := r(t, "block", "a.example")
	rl.Clients = []netip.Prefix{netip.MustParsePrefix("10.1.2.3/8")}
	s := newSet(rules.Allow, nil, rl)
	mustCompile(t, s)
	if got := s.Config.Rules[0].Clients[0]; got.String() != "10.1.2.3/8" {
		t.Errorf("Compile changed the rule's clients: %v", got)
	}
}

func TestDecideDoesNotAllocate(t *testing.T) {
	set := filtertest.Set(filtertest.Options{Seed: 3, Domains: 20_000, Categories: 10, Globs: 200})
	e := mustCompile(t, set)
	hosts := filtertest.Hosts(set, 512, 5)
	hosts = append(hosts, "", "a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r.s.t.u.v.w.x.y.z.com", "2001:db8::1", "10.1.1.1")
	now := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	i := 0
	allocs := testing.AllocsPerRun(2000, func() {
		e.Decide(filter.Request{Client: netip.MustParseAddr("10.1.2.3"), User: "u", Host: hosts[i%len(hosts)], Port: 443, Time: now})
		i++
	})
	if allocs != 0 {
		t.Errorf("Decide allocates %v times per call, want 0", allocs)
	}
}

func TestConcurrentDecide(t *testing.T) {
	set := filtertest.Set(filtertest.Options{Seed: 4, Domains: 5_000, Categories: 5, Globs: 100})
	e := mustCompile(t, set)
	hosts := filtertest.Hosts(set, 1000, 9)
	want := make([]filter.Decision, len(hosts))
	for i, h := range hosts {
		want[i] = e.Decide(filter.Request{Host: h, Client: netip.MustParseAddr("10.0.0.1")})
	}
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for g := range 8 {
		wg.Go(func() {
			for k := range 3 * len(hosts) {
				i := (k*7 + g*131) % len(hosts)
				if d := e.Decide(filter.Request{Host: hosts[i], Client: netip.MustParseAddr("10.0.0.1")}); d != want[i] {
					errs <- hosts[i]
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for h := range errs {
		t.Errorf("concurrent Decide(%q) differs from the sequential one", h)
	}
}

func TestSyntheticSet(t *testing.T) {
	set := filtertest.Set(filtertest.Options{Seed: 5, Domains: 1000, Categories: 10, Globs: 40})
	again := filtertest.Set(filtertest.Options{Seed: 5, Domains: 1000, Categories: 10, Globs: 40})
	if got, want := set.Categories["cat03"].Block, again.Categories["cat03"].Block; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatal("filtertest.Set is not deterministic")
	}
	e := mustCompile(t, set)
	// Every listed domain decides by its category rule (exceptions aside).
	for _, name := range []string{"cat00", "cat05"} {
		l := set.Categories[name]
		for _, d := range l.Block[1:20] {
			got := e.Decide(filter.Request{Host: "www." + d})
			if got.Category != name && got.Rule.Index != 1 {
				t.Errorf("%s from %s: got %+v", d, name, got)
			}
		}
		if got := e.Decide(filter.Request{Host: l.Allow[0]}); got.Category == name {
			t.Errorf("exception %s decided by its own category", l.Allow[0])
		}
	}
	if got := e.Decide(filter.Request{Host: "ads-0.anything"}); got.Verdict != filter.Block {
		t.Errorf("loose glob: %+v", got)
	}
	if e.Rules() != len(set.Config.Rules) || len(e.Categories()) != 10 {
		t.Errorf("Rules() = %d, Categories() = %v", e.Rules(), e.Categories())
	}
}

func TestHeapPerDomain(t *testing.T) {
	if testing.Short() {
		t.Skip("measures 200,000 domains")
	}
	const n = 200_000
	set := filtertest.Set(filtertest.Options{Seed: 6, Domains: n, Categories: 50, Globs: 1000})
	got := heapPerDomain(t, set, n)
	t.Logf("engine heap: %.1f bytes per domain", got)
	if got > 60 {
		t.Errorf("engine heap is %.1f bytes per domain, want at most 60", got)
	}
}

func TestDecisionRoute(t *testing.T) {
	for _, c := range []struct {
		d    filter.Decision
		want string
	}{
		{filter.Decision{Verdict: filter.Allow}, "direct"},
		{filter.Decision{Verdict: filter.Allow, Via: "tor"}, "tor"},
		{filter.Decision{Verdict: filter.Block, Via: "tor"}, ""},
	} {
		if got := c.d.Route(); got != c.want {
			t.Errorf("%+v.Route() = %q, want %q", c.d, got, c.want)
		}
	}
}

// TestRuleName: the access log names a rule, the default, or nothing when
// neither decided (a loop or a sniffed tunnel refused by the front end).
func TestRuleName(t *testing.T) {
	for _, tt := range []struct {
		d    filter.Decision
		want string
	}{
		{filter.Decision{Rule: filter.RuleRef{Index: 2, File: "/etc/sluice.yaml", Line: 9}}, "rule 2 (sluice.yaml:9)"},
		{filter.Decision{Default: true}, "default"},
		{filter.Decision{Rule: filter.RuleRef{Text: "sluice allow x.test until 12:00"}}, "sluice allow x.test until 12:00"},
		{filter.Decision{Verdict: filter.Block, Reason: "loop"}, ""},
	} {
		if got := tt.d.RuleName(); got != tt.want {
			t.Errorf("%+v: RuleName() = %q, want %q", tt.d, got, tt.want)
		}
	}
}
