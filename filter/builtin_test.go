package filter_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/sluiceproxy/sluice/filter"
	"github.com/sluiceproxy/sluice/rules"
)

// TestBuiltinDoH compiles the shipped builtin:doh list: its names block
// with their subdomains, its addresses block exactly those IP literals
// (however the front end received them, once normalized), and nothing
// else is caught.
func TestBuiltinDoH(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "sluice.yaml")
	os.WriteFile(cfg, []byte("rules:\n  - name: encrypted DNS\n    block: [builtin:doh, use-application-dns.net]\n"), 0o644)
	set, err := rules.Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e := mustCompile(t, set)
	for _, c := range []struct {
		host    string
		blocked bool
	}{
		{"dns.google", true},
		{"www.dns.google", true},
		{"mozilla.cloudflare-dns.com", true},
		{"abc123.dns.nextdns.io", true},
		{"use-application-dns.net", true},
		{"8.8.8.8", true},
		{"1.1.1.1", true},
		{"9.9.9.9", true},
		{"::ffff:8.8.8.8", true},
		{"2001:4860:4860::8888", true},
		{"2001:4860:4860:0:0:0:0:8888", true},
		{"[2606:4700:4700::1111]", true},
		{"8.8.8.9", false},
		{"18.8.8.8", false},
		{"2001:4860:4860::8889", false},
		{"google.com", false},
		{"nextdns.io", false},
		{"example.com", false},
	} {
		host, err := rules.NormalizeHost(c.host)
		if err != nil {
			t.Fatalf("%s: %v", c.host, err)
		}
		d := e.Decide(filter.Request{Host: host, Port: 443})
		if blocked := d.Verdict == filter.Block; blocked != c.blocked {
			t.Errorf("%s: %+v, want blocked %v", c.host, d, c.blocked)
			continue
		}
		if c.blocked && c.host != "use-application-dns.net" && (d.Category != "builtin:doh" || d.Rule.Label() != "encrypted DNS") {
			t.Errorf("%s: category %q, label %q", c.host, d.Category, d.Rule.Label())
		}
	}
}
