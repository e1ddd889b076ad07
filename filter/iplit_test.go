package filter_test

import (
	"testing"

	"github.com/sluiceproxy/sluice/filter"
	"github.com/sluiceproxy/sluice/rules"
)

// TestIPLiteralKeys decides IP literal hosts against rule sets whose keys
// are IP literals (a category's entries, exact and suffix patterns, a glob
// whose literal suffix is digits) and against one without any, where
// Decide skips the suffix walk of an IP literal: the engine must agree
// with the reference either way.
func TestIPLiteralKeys(t *testing.T) {
	cats := map[string]*rules.CategoryList{
		"ips":   {Name: "ips", Block: []string{"198.51.100.7", "2001:db8::5", "[2001:db8::6]", "203.0.113.9"}},
		"names": {Name: "names", Block: []string{"example.com", "a.example.net"}},
	}
	hosts := []string{"198.51.100.7", "198.51.100.8", "2001:db8::5", "[2001:db8::5]", "[2001:db8::6]",
		"2001:db8::6", "203.0.113.9", "[::ffff:203.0.113.9]", "192.0.2.7", "10.0.2.9", "1.2.0.2.9",
		"100.7", "51.100.7", "::1", "[::1]", "example.com", "www.example.com", "a.example.net"}
	sets := map[string]*rules.Set{
		"numeric keys": newSet(rules.Allow, cats,
			r(t, "block", "category:ips"),
			r(t, "block", "192.0.2.7", ".0.2.9", "::1"),
			r(t, "block", "**.0.2.9"),
			r(t, "block", "category:names")),
		"no numeric key": newSet(rules.Allow, cats,
			r(t, "block", "category:names", "10.0.0.0/8"),
			r(t, "block", "*.example.com")),
	}
	for name, set := range sets {
		e := mustCompile(t, set)
		ref := newReference(t, set)
		blocked := 0
		for _, h := range hosts {
			req := filter.Request{Host: h, Port: 443}
			d := e.Decide(req)
			got := want{d.Verdict, d.Rule.Index, d.Rule.Pattern, d.Category}
			if w := ref.decide(req); got != w {
				t.Errorf("%s: Decide(%q) = %+v, reference says %+v", name, h, got, w)
			}
			if d.Verdict == filter.Block {
				blocked++
			}
		}
		if blocked < 4 {
			t.Errorf("%s: only %d hosts blocked: the test no longer tests the keys", name, blocked)
		}
	}
}
