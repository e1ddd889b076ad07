package filter_test

import (
	"strings"
	"testing"

	"github.com/sluiceproxy/sluice/filter"
	"github.com/sluiceproxy/sluice/rules"
)

// TestWalkLabelLengths checks that Decide's suffix walk, which hashes
// labels of up to 16 bytes itself and leaves longer ones to the function
// Compile uses, finds the keys Compile stored, for labels of every length
// from 1 to 40 bytes at every place in a name, in both indexes, and in
// hosts longer than 64 bytes, whose dots are looked for one by one.
func TestWalkLabelLengths(t *testing.T) {
	var listed, exact []string
	for n := 1; n <= 40; n++ {
		l := strings.Repeat(string(rune('a'+n%26)), n)
		listed = append(listed, l+".example", "x."+l+".org", l+"."+l+".net")
		exact = append(exact, "e"+l+".exact.test")
	}
	long := strings.Repeat("abcdefghi.", 7) + "long.test" // 79 bytes
	listed = append(listed, long)
	cats := map[string]*rules.CategoryList{"c": {Name: "c", Block: listed}}
	rl := r(t, "block", "category:c")
	ex := r(t, "block", exact[0])
	for _, h := range exact[1:] {
		ex.Dests = append(ex.Dests, pat(t, h))
	}
	e := mustCompile(t, newSet(rules.Allow, cats, rl, ex))
	check := func(host string, want filter.Verdict) {
		t.Helper()
		if d := e.Decide(filter.Request{Host: host, Port: 443}); d.Verdict != want {
			t.Errorf("%q (%d bytes): %v (%s), want %v", host, len(host), d.Verdict, d.Rule.Pattern, want)
		}
	}
	for _, h := range listed {
		check(h, filter.Block)
		check("sub."+h, filter.Block)
		check(strings.Repeat("p", 30)+"."+h, filter.Block)
		check("q"+h, filter.Allow) // one byte more in the first label: not listed
	}
	for _, h := range exact {
		check(h, filter.Block)
		check("sub."+h, filter.Allow) // exact: not its subdomains
	}
}

// TestWalkTopLabelKeys checks keys of one label, whose lookup Decide skips
// unless the host's top-level label is one of them: a category domain, an
// exact and a suffix pattern, and the literal suffix of a glob, each of one
// label, and IP literals without a dot.
func TestWalkTopLabelKeys(t *testing.T) {
	cats := map[string]*rules.CategoryList{"c": {Name: "c", Block: []string{"intranet", "::1"}}}
	e := mustCompile(t, newSet(rules.Allow, cats,
		r(t, "block", "category:c"),
		r(t, "block", "printer", ".corp", "*.lan")))
	for host, want := range map[string]filter.Verdict{
		"intranet": filter.Block, "a.intranet": filter.Block, "::1": filter.Block,
		"printer": filter.Block, "a.printer": filter.Allow,
		"corp": filter.Block, "x.y.corp": filter.Block,
		"x.lan": filter.Block, "lan": filter.Allow,
		"other": filter.Allow, "intranet.com": filter.Allow, "printer.": filter.Allow, "::2": filter.Allow,
	} {
		if d := e.Decide(filter.Request{Host: host, Port: 443}); d.Verdict != want {
			t.Errorf("%q: %v (%s), want %v", host, d.Verdict, d.Rule.Pattern, want)
		}
	}
}
