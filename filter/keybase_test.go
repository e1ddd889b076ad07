package filter

import (
	"fmt"
	"testing"

	"github.com/sluiceproxy/sluice/rules"
)

// TestBaseOfHeavyNames checks that the heavy suffixes are found, level by
// level, and that the base Compile computes from a name's precomputed
// hashes is the one keyBase (and so Decide) finds.
func TestBaseOfHeavyNames(t *testing.T) {
	var names []string
	for i := range heavyMin + 1 {
		names = append(names, fmt.Sprintf("s%d.co.uk", i), fmt.Sprintf("s%d.b.blogspot.com", i))
		if i < heavyMin { // not more: c.b.blogspot.com is not heavy
			names = append(names, fmt.Sprintf("s%d.c.b.blogspot.com", i))
		}
	}
	names = append(names, "few.example", "a.few.example", "com", "", "x.y.z.w.few.example")
	cats := map[string]*rules.CategoryList{"c": {Name: "c", Block: names}}
	set := &rules.Set{Config: &rules.Config{Default: rules.Allow, Rules: []rules.Rule{{Index: 1, Action: rules.Block,
		Dests: []rules.Pattern{{Kind: rules.Category, Host: "c", Text: "category:c"}}}}}, Categories: cats}
	e, err := Compile(set)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		suffix string
		heavy  bool
	}{
		{"co.uk", true}, {"blogspot.com", true}, {"b.blogspot.com", true}, {"c.b.blogspot.com", false},
		{"s1.co.uk", false}, {"few.example", false}, {"uk", false},
	} {
		k, _ := e.keyBase(tt.suffix)
		if got := e.heavy.has(k); got != tt.heavy {
			t.Errorf("heavy(%q) = %v, want %v", tt.suffix, got, tt.heavy)
		}
	}
	for _, d := range names {
		if d == "" {
			continue
		}
		key, base := e.keyBase(d)
		n := e.hashName(d)
		if n.key != key || e.base(n, d) != base {
			t.Errorf("%q: hashName/base = %x/%x, keyBase = %x/%x", d, n.key, e.base(n, d), key, base)
		}
	}
	// The names below a non-heavy suffix share its home.
	_, b1 := e.keyBase("a.few.example")
	_, b2 := e.keyBase("x.y.z.w.few.example")
	k, _ := e.keyBase("few.example")
	if b1 != k || b2 != k {
		t.Errorf("bases under few.example: %x, %x, want %x", b1, b2, k)
	}
}
