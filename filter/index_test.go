package filter

import (
	"math/bits"
	"strings"
	"testing"

	"github.com/sluiceproxy/sluice/filter/filtertest"
)

func TestIndexPackAndTwins(t *testing.T) {
	const hi = 0xabcdef0123456000 // shared high bits: these keys are twins once packed
	tb := newBuildTable(8)
	keys := map[uint64]uint32{hi | 1: 1, hi | 2: 2, 0x1111111111111000: 3, 1: 4}
	for k, v := range keys {
		s, fresh := tb.slot(k, k)
		if !fresh {
			t.Fatalf("key %#x not fresh", k)
		}
		s.val = v
	}
	if s, fresh := tb.slot(hi|1, hi|1); fresh || s.val != 1 {
		t.Fatalf("second slot(%#x) = %v, %v", uint64(hi|1), s.val, fresh)
	}
	var merged [][2]uint32
	x, err := tb.pack(8, func(a, b uint32) (uint32, error) {
		merged = append(merged, [2]uint32{a, b})
		return 7, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(merged) != 1 {
		t.Fatalf("merges = %v, want one of nodes 1 and 2", merged)
	}
	for _, tt := range []struct {
		key  uint64
		want uint32
		ok   bool
	}{
		{hi | 1, 7, true}, {hi | 2, 7, true}, {0x1111111111111000, 3, true}, {1, 4, true},
		{0x2222222222222000, 0, false}, {hi | 0x1000, 0, false},
	} {
		if v, ok := x.get(tt.key, tt.key); v != tt.want || ok != tt.ok {
			t.Errorf("get(%#x) = %d, %v; want %d, %v", tt.key, v, ok, tt.want, tt.ok)
		}
	}
	// A merged id that does not fit the packed bits asks for a new seed.
	if _, err := tb.pack(8, func(a, b uint32) (uint32, error) { return 8, nil }); err != errCollision {
		t.Errorf("pack with an id too wide: err = %v, want errCollision", err)
	}
}

func TestLiteralSuffix(t *testing.T) {
	for _, tt := range []struct{ glob, want string }{
		{"*.ads.example.com", "ads.example.com"},
		{"ad*.x.com", "x.com"},
		{"**.example.com", "example.com"},
		{"ads.*", ""},
		{"a?.b", "b"},
		{"{a,b.c}.example.com", "example.com"},
		{"{foo,bar}example.com", "com"},
		{"x.[a-z]y.com", "com"},
		{"plain.example", "plain.example"},
		{"*", ""},
	} {
		if got := literalSuffix(tt.glob); got != tt.want {
			t.Errorf("literalSuffix(%q) = %q, want %q", tt.glob, got, tt.want)
		}
	}
}

// TestCategoryIndexBits checks what the doc of index promises: category
// domains share a few catNodes, so the category index keeps most of a
// hash's 64 bits (a false match is about 2^-(64-b) per word compared),
// and the rule index maps names to their patterns.
func TestCategoryIndexBits(t *testing.T) {
	set := filtertest.Set(filtertest.Options{Seed: 6, Domains: 200_000, Categories: 50, Globs: 1000})
	e, err := Compile(set)
	if err != nil {
		t.Fatal(err)
	}
	b := bits.OnesCount64(e.cats.mask)
	t.Logf("%d catNodes, %d bits of the value in the category index; %d patterns of rule names, %d bits",
		len(e.catNodes), b, len(e.namePats), bits.OnesCount64(e.names.mask))
	if b > 10 {
		t.Errorf("category index keeps %d bits for values, want at most 10", b)
	}
}

// TestIPLike checks the test Decide relies on to skip the suffix walk of
// an IP literal: every label suffix of an IP literal is ipLike.
func TestIPLike(t *testing.T) {
	for _, host := range []string{"93.184.1.2", "192.168.0.1", "::1", "[::1]", "[2001:db8::5]",
		"2001:db8::a", "::ffff:192.0.2.1", "[::ffff:192.0.2.1]", "fe80::1%eth0"} {
		for s := host; ; {
			if !ipLike(s) {
				t.Errorf("ipLike(%q) = false: %q is a suffix of the IP literal %q", s, s, host)
			}
			i := strings.IndexByte(s, '.')
			if i < 0 {
				break
			}
			s = s[i+1:]
		}
	}
	for _, name := range []string{"example.com", "com", "a.1b.example", "xn--p1ai", ""} {
		if ipLike(name) {
			t.Errorf("ipLike(%q) = true", name)
		}
	}
}
