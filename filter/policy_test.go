package filter_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice/filter"
	"github.com/sluiceproxy/sluice/rules"
)

// TestReportOnlyRules: a report-only rule never decides: the request is
// decided as if it were absent (a rule below still blocks, a rule above
// still allows), and an allowed request it would have blocked is marked.
func TestReportOnlyRules(t *testing.T) {
	rep := r(t, "block", ".games.example", "both.example")
	rep.Report = true
	e := mustCompile(t, newSet(rules.Allow, nil,
		r(t, "allow", "ok.games.example"),
		rep,
		r(t, "block", "both.example"),
	))
	tests := []struct {
		host       string
		verdict    filter.Verdict
		rule       int
		wouldBlock bool
	}{
		{"x.games.example", filter.Allow, 0, true},   // the default allows; rule 2 would block
		{"ok.games.example", filter.Allow, 1, false}, // rule 1 decides first, as it would enforced
		{"both.example", filter.Block, 3, false},     // never opened by the report rule
		{"other.example", filter.Allow, 0, false},
	}
	for _, tt := range tests {
		d := e.Decide(filter.Request{Host: tt.host})
		if d.Verdict != tt.verdict || d.Rule.Index != tt.rule || d.WouldBlock != tt.wouldBlock {
			t.Errorf("%s: %v rule %d would_block %v; want %v rule %d would_block %v", tt.host, d.Verdict, d.Rule.Index, d.WouldBlock, tt.verdict, tt.rule, tt.wouldBlock)
		}
		if d.WouldBlock && (d.Report.Index != 2 || d.Report.Pattern != ".games.example") {
			t.Errorf("%s: report rule %+v, want rule 2 pattern .games.example", tt.host, d.Report)
		}
	}
	if n := e.Rules(); n != 3 {
		t.Errorf("Rules() = %d, want 3", n)
	}
	// With a block default, a report rule changes nothing at all.
	e = mustCompile(t, newSet(rules.Block, nil, rep))
	if d := e.Decide(filter.Request{Host: "x.games.example"}); d.Verdict != filter.Block || d.WouldBlock {
		t.Errorf("block default: %+v", d)
	}
}

// TestSafeSearchDecision: a safesearch rule allows its engines' hosts with
// the enforcement host, and only those.
func TestSafeSearchDecision(t *testing.T) {
	ss := rules.Rule{Action: rules.Allow, Enforce: map[string]string{}}
	for _, eng := range []string{rules.EngineGoogle, rules.EngineYouTube} {
		level := rules.LevelStrict
		if eng == rules.EngineYouTube {
			level = rules.LevelModerate
		}
		hosts, enforce, ok := rules.SafeSearchHosts(eng, level)
		if !ok {
			t.Fatal(eng)
		}
		for _, h := range hosts {
			ss.Dests = append(ss.Dests, rules.Pattern{Kind: rules.Exact, Text: h, Host: h})
			ss.Enforce[h] = enforce
		}
	}
	ss.Clients = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	e := mustCompile(t, newSet(rules.Allow, nil, r(t, "block", "www.google.ru"), ss))
	kid := netip.MustParseAddr("10.1.2.3")
	tests := []struct {
		host    string
		client  netip.Addr
		verdict filter.Verdict
		enforce string
	}{
		{"www.google.com", kid, filter.Allow, "forcesafesearch.google.com"},
		{"google.co.uk", kid, filter.Allow, "forcesafesearch.google.com"},
		{"www.google.de", kid, filter.Allow, "forcesafesearch.google.com"},
		{"m.youtube.com", kid, filter.Allow, "restrictmoderate.youtube.com"},
		{"youtubei.googleapis.com", kid, filter.Allow, "restrictmoderate.youtube.com"},
		{"www.google.ru", kid, filter.Block, ""},                               // the rule above decides first
		{"mail.google.com", kid, filter.Allow, ""},                             // not a search host
		{"www.bing.com", kid, filter.Allow, ""},                                // not listed
		{"www.google.com", netip.MustParseAddr("192.0.2.1"), filter.Allow, ""}, // not the rule's client
	}
	for _, tt := range tests {
		d := e.Decide(filter.Request{Host: tt.host, Client: tt.client})
		if d.Verdict != tt.verdict || d.Enforce != tt.enforce {
			t.Errorf("%s from %s: %v enforce %q; want %v %q", tt.host, tt.client, d.Verdict, d.Enforce, tt.verdict, tt.enforce)
		}
	}
}

// TestExceptions: an exception covers its domain and subdomains, its
// client and user only, until its end; Live drops the ended ones.
func TestExceptions(t *testing.T) {
	now := time.Date(2026, 12, 1, 13, 0, 0, 0, time.UTC)
	x := filter.NewExceptions([]rules.Exception{
		{Domain: "wiki.example", Until: now.Add(time.Hour)},
		{Domain: "games.example", Until: now.Add(time.Minute), Client: netip.MustParsePrefix("10.1.0.0/16"), User: "alice"},
	})
	in, out := netip.MustParseAddr("10.1.2.3"), netip.MustParseAddr("10.2.0.1")
	tests := []struct {
		host   string
		client netip.Addr
		user   string
		at     time.Time
		ok     bool
	}{
		{"wiki.example", out, "", now, true},
		{"de.wiki.example", out, "", now, true},
		{"xwiki.example", out, "", now, false},
		{"wiki.example", out, "", now.Add(time.Hour), false}, // at its end: ended
		{"games.example", in, "alice", now, true},
		{"games.example", in, "bob", now, false},
		{"games.example", out, "alice", now, false},
		{"games.example", netip.Addr{}, "alice", now, false},
	}
	for _, tt := range tests {
		d, ok := x.Decide(filter.Request{Host: tt.host, Client: tt.client, User: tt.user, Time: tt.at}, "tor")
		if ok != tt.ok || ok && (d.Verdict != filter.Allow || d.Reason != filter.ReasonException || d.Via != "tor" || d.Rule.Pattern == "") {
			t.Errorf("%s %s %q: %+v %v, want %v", tt.host, tt.client, tt.user, d, ok, tt.ok)
		}
	}
	live, ended := x.Live(now.Add(2 * time.Minute))
	if live.Len() != 1 || len(ended) != 1 || ended[0].Domain != "games.example" {
		t.Errorf("Live: %d live, ended %v", live.Len(), ended)
	}
	if same, ended := live.Live(now.Add(2 * time.Minute)); same != live || ended != nil {
		t.Error("Live without an ended exception must return the same Exceptions")
	}
	var none *filter.Exceptions
	if _, ok := none.Decide(filter.Request{Host: "wiki.example"}, ""); ok {
		t.Error("nil Exceptions covered a request")
	}
}
