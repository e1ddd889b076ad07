package filter

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/sluiceproxy/sluice/filter/filtertest"
	"github.com/sluiceproxy/sluice/rules"
)

// TestPrefilterHasEveryKey checks the property Decide relies on: a key
// added to the prefilter always tests positive, for random keys and bases
// and for keys that share a base, as the suffixes of one host do.
func TestPrefilterHasEveryKey(t *testing.T) {
	for _, n := range []int{0, 1, 7, 1000, 100_000} {
		p := newPrefilter(n)
		r := rand.New(rand.NewPCG(uint64(n), 3))
		keys := make([][2]uint64, 0, n)
		for len(keys) < n {
			base := r.Uint64()
			for j := range 1 + r.IntN(9) { // up to nine keys under one base
				h := base
				if j > 0 {
					h = r.Uint64()
				}
				keys = append(keys, [2]uint64{h, base})
			}
		}
		for _, k := range keys {
			p.add(k[0], k[1])
		}
		for _, k := range keys {
			if !p.has(k[0], k[1]) {
				t.Fatalf("n=%d: key %#x (base %#x) added but tests negative", n, k[0], k[1])
			}
		}
		if got, want := p.blocks*64, max(n*prefilterBits/8, 64)+64; got > want {
			t.Errorf("n=%d: prefilter is %d bytes, want at most %d", n, got, want)
		}
	}
	if p := newPrefilter(0); p.has(1, 1) || p.has(^uint64(0), 0) {
		t.Error("an empty prefilter tests positive")
	}
}

// prefilterSet is a synthetic set with rule names of every kind besides
// its category domains.
func prefilterSet() *rules.Set {
	return filtertest.Set(filtertest.Options{Seed: 21, Domains: 100_000, Categories: 10, Globs: 1000})
}

// categoryNames returns the keys of a compiled set's category index:
// category domains and exceptions.
func categoryNames(set *rules.Set) []string {
	var names []string
	for _, l := range set.Categories {
		names = append(names, l.Block...)
		names = append(names, l.Allow...)
	}
	return names
}

// ruleNames returns the keys of a compiled set's rule index: exact and
// suffix names, literal suffixes of globs.
func ruleNames(set *rules.Set) []string {
	var names []string
	for _, r := range set.Config.Rules {
		for _, p := range r.Dests {
			switch p.Kind {
			case rules.Exact, rules.Suffix:
				names = append(names, p.Host)
			case rules.Glob:
				if lit := literalSuffix(p.Host); lit != "" {
					names = append(names, lit)
				}
			}
		}
	}
	return names
}

// TestPrefilterNoFalseNegatives checks, on a compiled engine, that every
// category name tests positive in the prefilter with the key and base
// Decide computes for it, so the prefilter never hides a listed name, and
// that every name is found in its index.
func TestPrefilterNoFalseNegatives(t *testing.T) {
	set := prefilterSet()
	set.Config.Rules = append(set.Config.Rules, rules.Rule{Index: len(set.Config.Rules) + 1, Action: rules.Block,
		Dests: []rules.Pattern{{Kind: rules.Exact, Host: "exact.example", Text: "exact.example"},
			{Kind: rules.Suffix, Host: "co.uk", Text: ".co.uk"}, {Kind: rules.Suffix, Host: "one", Text: ".one"}}})
	e, err := Compile(set)
	if err != nil {
		t.Fatal(err)
	}
	names := categoryNames(set)
	for _, d := range names {
		if d == "" {
			continue
		}
		key, base := e.keyBase(d)
		if !e.pre.has(key, base) {
			t.Fatalf("category name %q tests negative in the prefilter", d)
		}
		if _, ok := e.cats.get(key, base); !ok {
			t.Fatalf("category name %q is not in the category index", d)
		}
	}
	for _, d := range ruleNames(set) {
		key, base := e.keyBase(d)
		if !e.pre.has(e.hk.nameKey(key), base) || !e.pre.hasNames(e.pre.blockOf(base)) {
			t.Fatalf("rule name %q tests negative in the prefilter", d)
		}
		if _, ok := e.names.get(key, base); !ok {
			t.Fatalf("rule name %q is not in the rule index", d)
		}
	}
	t.Logf("%d names, prefilter %d bytes (%.2f bytes per name)",
		len(names), e.pre.blocks*64, float64(e.pre.blocks*64)/float64(len(names)))
}

// TestPrefilterFalsePositives measures how often the prefilter lets a name
// that is in no list through to the index: per name looked up, and per
// host (any of its label suffixes), on 100,000 random absent names.
func TestPrefilterFalsePositives(t *testing.T) {
	set := prefilterSet()
	e, err := Compile(set)
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{}
	for _, d := range append(categoryNames(set), ruleNames(set)...) {
		listed[d] = true
	}
	r := rand.New(rand.NewPCG(22, 23))
	label := func() string {
		const chars = "abcdefghijklmnopqrstuvwxyz0123456789"
		b := make([]byte, 5+r.IntN(8))
		for i := range b {
			b[i] = chars[r.IntN(len(chars))]
		}
		return string(b)
	}
	tlds := []string{"com", "net", "org", "de", "co.uk", "io"}
	const n = 100_000
	names, fpNames, hosts, fpHosts := 0, 0, 0, 0
	for hosts < n {
		h := label() + "." + tlds[r.IntN(len(tlds))]
		if r.IntN(3) == 0 {
			h = label() + "." + h
		}
		// Only the suffixes below the top-level ones, which are what
		// a random name adds: "com" and "co.uk" are the same for all.
		var sfx []string
		for s := h; strings.Count(s, ".") >= 1 && s != "co.uk"; s = s[strings.IndexByte(s, '.')+1:] {
			sfx = append(sfx, s)
		}
		absent := true
		for _, s := range sfx {
			absent = absent && !listed[s]
		}
		if !absent {
			continue
		}
		hosts++
		anyFP := false
		for _, s := range sfx {
			names++
			if key, base := e.keyBase(s); e.pre.has(key, base) {
				fpNames++
				anyFP = true
			}
		}
		if anyFP {
			fpHosts++
		}
	}
	perName, perHost := float64(fpNames)/float64(names), float64(fpHosts)/float64(hosts)
	t.Logf("false positives: %.3f%% of %d names, %.3f%% of %d hosts", perName*100, names, perHost*100, hosts)
	// At 8 bits per key and 8 bits set per key, a split block Bloom filter
	// answers about 3% of absent names wrongly; a host tests one or two.
	if perName > 0.04 || perHost > 0.05 {
		t.Errorf("false positive rate %.3f%% per name, %.3f%% per host: want under 4%% and 5%%", perName*100, perHost*100)
	}
}

// TestStepDistinct checks that the label hash reads every byte of labels
// of every length class (the short, 4-to-16 and looping paths) and depends
// on the hash it extends.
func TestStepDistinct(t *testing.T) {
	var k hashKey
	r := rand.New(rand.NewPCG(5, 6))
	k = hashKey{r.Uint64() | 1, r.Uint64() | 1, r.Uint64() | 1}
	seen := map[uint64]string{}
	add := func(h uint64, s string) {
		x := step(&k, h, s)
		if x == 0 {
			t.Fatalf("step(%#x, %q) = 0", h, s)
		}
		id := string(rune(h)) + "/" + s
		if prev, ok := seen[x]; ok && prev != id {
			t.Fatalf("step collides: %q and %q", prev, id)
		}
		seen[x] = id
	}
	for n := range 41 {
		base := []byte(strings.Repeat("a", n))
		for _, h := range []uint64{0, 1, 2} {
			add(h, string(base))
		}
		for i := range n { // each byte counts
			for _, c := range []byte{'b', 'z', '0'} {
				b := append([]byte(nil), base...)
				b[i] = c
				add(0, string(b))
			}
		}
	}
	for range 50_000 {
		b := make([]byte, r.IntN(40))
		for i := range b {
			b[i] = byte(r.IntN(256))
		}
		add(0, string(b))
	}
}
