package rules

import (
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestBuiltinDoHParses reads the shipped list as Sluice does: every line is
// a name or an address (none invalid or skipped), the well-known resolvers
// are in it, and no entry is a provider's main web site.
func TestBuiltinDoHParses(t *testing.T) {
	if got := Builtins(); !slices.Equal(got, []string{"builtin:doh"}) {
		t.Fatalf("Builtins() = %v", got)
	}
	f, err := openList("builtin:doh")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var entries []string
	st, err := ParseList(f, "builtin:doh", func(e Entry) { entries = append(entries, e.Domain) })
	if err != nil || st.Invalid != 0 || st.Skipped != 0 || st.Format != FormatPlain {
		t.Fatalf("ParseList: %v, %+v", err, st)
	}
	for _, want := range []string{
		"dns.google", "cloudflare-dns.com", "mozilla.cloudflare-dns.com", "dns.quad9.net", "doh.opendns.com",
		"dns.nextdns.io", "doh.cleanbrowsing.org", "dns.adguard-dns.com",
		"8.8.8.8", "8.8.4.4", "1.1.1.1", "1.0.0.1", "9.9.9.9", "2001:4860:4860::8888", "2606:4700:4700::1111", "2620:fe::fe",
	} {
		if !slices.Contains(entries, want) {
			t.Errorf("builtin:doh lacks %s", want)
		}
	}
	seen := map[string]bool{}
	for _, e := range entries {
		if seen[e] {
			t.Errorf("builtin:doh lists %s twice", e)
		}
		seen[e] = true
		// Entries cover their subdomains: a bare provider domain would
		// block the provider's whole web site.
		for _, site := range []string{"google.com", "google", "quad9.net", "opendns.com", "nextdns.io", "cleanbrowsing.org", "adguard.com", "adguard-dns.io"} {
			if e == site {
				t.Errorf("builtin:doh lists the web site %s", e)
			}
		}
	}
	if len(entries) < 60 {
		t.Errorf("builtin:doh has %d entries, want a few dozen names and addresses", len(entries))
	}
	// The header names its sources and says it is refreshed by hand.
	f2, _ := openList("builtin:doh")
	head, _ := io.ReadAll(f2)
	f2.Close()
	for _, want := range []string{"Sources", "refreshed by hand", "github.com/curl/curl/wiki/DNS-over-HTTPS"} {
		if !strings.Contains(string(head), want) {
			t.Errorf("builtin:doh header lacks %q", want)
		}
	}
}

func TestBuiltinPattern(t *testing.T) {
	p, err := ParsePattern("builtin:doh")
	if err != nil || p.Kind != Category || p.Host != "builtin:doh" {
		t.Fatalf("ParsePattern(builtin:doh) = %+v, %v", p, err)
	}
	if _, err := ParsePattern("builtin:dho"); err == nil || !strings.Contains(err.Error(), `unknown built-in list "builtin:dho" (want one of builtin:doh)`) {
		t.Errorf("unknown builtin: %v", err)
	}
	// A configured category cannot take a built-in list's name.
	if _, err := Parse("sluice.yaml", []byte("categories:\n  builtin:doh: [x.txt]\n")); err == nil || !strings.Contains(err.Error(), "sluice.yaml:2: categories: \"builtin:doh\" is a built-in list") {
		t.Errorf("a category named builtin:doh: %v", err)
	}
	_, err = Parse("sluice.yaml", []byte("rules:\n  - block: [a.test]\n  - block: [builtin:dns]\n"))
	if err == nil || !strings.HasPrefix(err.Error(), "sluice.yaml:3: rule 2: unknown built-in list") {
		t.Errorf("unknown builtin in a rule: %v", err)
	}
}

// TestBuiltinInSet: a rule that uses builtin:doh gets the category in the
// Set, read from the embedded file, and Explain points at its line.
func TestBuiltinInSet(t *testing.T) {
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "sluice.yaml")
	if err := os.WriteFile(cfgFile, []byte("rules:\n  - block: [builtin:doh]\n  - block: [builtin:doh, a.test]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	set, err := Load(cfgFile)
	if err != nil {
		t.Fatal(err)
	}
	cl := set.Categories["builtin:doh"]
	if cl == nil || len(cl.Sources) != 1 || cl.Sources[0].Err != nil || cl.Sources[0].Source.Path != "builtin:doh" ||
		!slices.Contains(cl.Block, "dns.google") || !slices.Contains(cl.Block, "8.8.8.8") {
		t.Fatalf("builtin:doh in the set: %+v", cl)
	}
	if len(set.Categories) != 1 {
		t.Errorf("categories: %v", mapKeys(set.Categories))
	}
	for _, host := range []string{"dns.google", "x.dns.google", "8.8.8.8", "2001:4860:4860::8888"} {
		ms := Explain(set, host)
		if len(ms) != 1 || ms[0].Category != "builtin:doh" || ms[0].File != "builtin:doh" || ms[0].Line < 20 {
			t.Errorf("Explain(%s) = %+v", host, ms)
		}
	}
	if ms := Explain(set, "8.8.8.9"); len(ms) != 0 {
		t.Errorf("Explain(8.8.8.9) = %+v", ms)
	}
	// No rule, no built-in category; LoadBuiltin still reads it.
	set, err = LoadSet(Default())
	if err != nil || set.Categories["builtin:doh"] != nil {
		t.Fatalf("default set: %v, %v", err, mapKeys(set.Categories))
	}
	if cl, ok := LoadBuiltin("builtin:doh"); !ok || len(cl.Block) < 60 {
		t.Errorf("LoadBuiltin: %v %+v", ok, cl)
	}
	if _, ok := LoadBuiltin("builtin:nope"); ok {
		t.Error("LoadBuiltin(builtin:nope) is ok")
	}
}
