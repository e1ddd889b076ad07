package rules

import (
	"net/netip"
	"testing"

	"github.com/gobwas/glob"
)

func TestParsePattern(t *testing.T) {
	tests := []struct {
		in     string
		kind   PatternKind
		host   string
		prefix string
	}{
		{"example.com", Exact, "example.com", ""},
		{"Example.COM.", Exact, "example.com", ""},
		{"bücher.example", Exact, "xn--bcher-kva.example", ""},
		{".example.com", Suffix, "example.com", ""},
		{".Bücher.Example", Suffix, "xn--bcher-kva.example", ""},
		{"*.example.com", Glob, "*.example.com", ""},
		{"*.TikTok.com", Glob, "*.tiktok.com", ""},
		{"ads.**", Glob, "ads.**", ""},
		{"ad?.example.com", Glob, "ad?.example.com", ""},
		{"{a,b}.example.com", Glob, "{a,b}.example.com", ""},
		{"[ab]x.example.com", Glob, "[ab]x.example.com", ""},
		{"*.bücher.example", Glob, "*.xn--bcher-kva.example", ""},
		{"category:social", Category, "social", ""},
		{"category:social_networks", Category, "social_networks", ""},
		{"10.0.0.0/8", CIDR, "", "10.0.0.0/8"},
		{"10.1.2.3/8", CIDR, "", "10.0.0.0/8"},
		{"192.0.2.7", CIDR, "", "192.0.2.7/32"},
		{"::1", CIDR, "", "::1/128"},
		{"[2001:db8::1]", CIDR, "", "2001:db8::1/128"},
		{"2001:DB8::/32", CIDR, "", "2001:db8::/32"},
		{"::ffff:10.0.0.1", CIDR, "", "10.0.0.1/32"},
		{"::ffff:10.0.0.0/104", CIDR, "", "10.0.0.0/8"},
	}
	for _, tt := range tests {
		p, err := ParsePattern(tt.in)
		if err != nil {
			t.Errorf("ParsePattern(%q): %v", tt.in, err)
			continue
		}
		if p.Kind != tt.kind || p.Host != tt.host || p.Text != tt.in {
			t.Errorf("ParsePattern(%q) = {%v %q %q}, want {%v %q %q}", tt.in, p.Kind, p.Host, p.Text, tt.kind, tt.host, tt.in)
		}
		if tt.prefix != "" && p.Prefix != netip.MustParsePrefix(tt.prefix) {
			t.Errorf("ParsePattern(%q).Prefix = %v, want %v", tt.in, p.Prefix, tt.prefix)
		}
		if tt.prefix == "" && p.Prefix.IsValid() {
			t.Errorf("ParsePattern(%q).Prefix = %v, want none", tt.in, p.Prefix)
		}
	}
}

func TestParsePatternErrors(t *testing.T) {
	for _, in := range []string{
		"", "  ", "category:", "category:a b", "category:.x", "..example.com", ".", "a..b",
		"10.0.0.0/33", "10.0.0.0/x", "300.0.0.0/8", "exa mple.com", "*..com", "[a.com", "{a,b", "example.com:443",
		"http://example.com/", "fe80::1%eth0",
	} {
		if p, err := ParsePattern(in); err == nil {
			t.Errorf("ParsePattern(%q) = %+v, want an error", in, p)
		}
	}
}

func TestParsePrefix(t *testing.T) {
	for in, want := range map[string]string{
		"10.1.0.0/16": "10.1.0.0/16", "10.1.2.3": "10.1.2.3/32", "::1": "::1/128", "fd00::1/8": "fd00::/8",
	} {
		got, err := ParsePrefix(in)
		if err != nil || got != netip.MustParsePrefix(want) {
			t.Errorf("ParsePrefix(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := ParsePrefix("10.0.0.0/40"); err == nil {
		t.Error("ParsePrefix(10.0.0.0/40): no error")
	}
}

func FuzzParsePattern(f *testing.F) {
	for _, s := range []string{"example.com", ".example.com", "*.example.com", "ads.**", "category:social",
		"10.0.0.0/8", "::1", "[::1]", "{a,b}.x", "[a-z].com", "bücher.example", "::ffff:1.2.3.4/120"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePattern(s)
		if err != nil {
			return
		}
		switch p.Kind {
		case Exact, Suffix:
			if h, err := NormalizeHost(p.Host); err != nil || h != p.Host {
				t.Fatalf("%q: host %q not normalized", s, p.Host)
			}
		case Glob:
			if _, err := glob.Compile(p.Host, '.'); err != nil {
				t.Fatalf("%q: glob %q does not compile: %v", s, p.Host, err)
			}
		case CIDR:
			if !p.Prefix.IsValid() || p.Prefix != p.Prefix.Masked() || p.Prefix.Addr().Is4In6() {
				t.Fatalf("%q: prefix %v not canonical", s, p.Prefix)
			}
		case Category:
			if checkCategoryName(p.Host) != nil {
				t.Fatalf("%q: bad category %q", s, p.Host)
			}
		default:
			t.Fatalf("%q: kind %v", s, p.Kind)
		}
	})
}
