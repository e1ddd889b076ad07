package filter

import (
	"testing"

	"github.com/gobwas/glob"
)

// simpleGlobs are globs the engine matches without gobwas, and a few it
// leaves to gobwas.
var simpleGlobs = []string{
	"*.ads.example", "**.ads.example", "ads*.example", "t?.x.example", "ads-7.*", "a**",
	"*", "**", "?", "x?", "?x.com", "*x", "ads.*.example", "{a,b}.example", "[a-c]*.example",
	"é?.example", `a\*.example`, "***.example", "adserver-long*.example", "adserver*", "ads-[0-9]*.*",
}

var globHosts = []string{
	"", ".", "a", "x", "ads.example", ".ads.example", "www.ads.example", "a.b.ads.example",
	"wwwads.example", "ads.example.com", "adsfoo.example", "ads.example", "ads-7.", "ads-7.com",
	"ads-7.a.b", "tq.x.example", "t.x.example", "t..x.example", "tqq.x.example", "té.x.example",
	"t\xff.x.example", "t\xc3.x.example", "a", "abc", "a.b", "xx", "xy.com", "é.x.com", "éq.example",
	"a*.example", "ads.q.example", "b.example", "adserver", "adserver-longer.example", "adserver-long.example",
	"adserve", "ads-7x.example", "adserver-lxng.example", "adserver-lonx.example", "tq.y.example", "tqx.example",
}

func TestSimpleGlobAgreesWithGobwas(t *testing.T) {
	for _, p := range simpleGlobs {
		g := glob.MustCompile(p, '.')
		for _, h := range globHosts {
			checkGlob(t, p, g, h)
		}
	}
}

// checkGlob compares the engine's match of pattern p with gobwas's, with
// and without the offset of the literal suffix that Decide passes.
func checkGlob(t *testing.T, p string, g *glob.Pattern, host string) {
	t.Helper()
	lit := literalSuffix(p)
	b := &builder{e: &Engine{}, loose: []buildPat{newGlob(p, g, lit)}}
	if err := b.packNames(); err != nil {
		t.Fatal(err)
	}
	e := b.e
	ga := &e.loose[0]
	want := g.Match(host)
	if got := ga.match(e, host, -1); got != want {
		t.Errorf("glob %q on %q: match = %v, gobwas says %v", p, host, got, want)
	}
	// Decide turns a host away from a loose glob by the first bytes of
	// its prefix: never one that the glob matches.
	if k := e.looseKey[0]; head(host)&k.mask != k.word && want {
		t.Errorf("glob %q on %q: turned away by its prefix key, but gobwas matches", p, host)
	}
	// Decide passes the offset of the literal suffix when host ends with it
	// on a label boundary (or is it).
	if lit != "" && len(host) >= len(lit) && host[len(host)-len(lit):] == lit {
		off := len(host) - len(lit)
		if off == 0 || host[off-1] == '.' {
			if got := ga.match(e, host, off); got != want {
				t.Errorf("glob %q on %q at %d: match = %v, gobwas says %v", p, host, off, got, want)
			}
		}
	}
}

func FuzzSimpleGlob(f *testing.F) {
	for i, p := range simpleGlobs {
		f.Add(p, globHosts[i%len(globHosts)])
	}
	f.Fuzz(func(t *testing.T, p, host string) {
		g, err := glob.Compile(p, '.')
		if err != nil {
			return
		}
		checkGlob(t, p, g, host)
	})
}

func TestHashSet(t *testing.T) {
	var empty hashSet
	if empty.has(1) {
		t.Error("empty set has 1")
	}
	in := []uint64{1, 9, 17, 1 << 63, 12345}
	s := newHashSet(in)
	for _, h := range in {
		if !s.has(h) {
			t.Errorf("set lacks %d", h)
		}
	}
	for _, h := range []uint64{2, 25, 1<<63 | 1, 8} {
		if s.has(h) {
			t.Errorf("set has %d", h)
		}
	}
}
