package rules

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestParseIsolate(t *testing.T) {
	src := `default: allow
upstreams:
  tor: {url: "socks5h://127.0.0.1:9050", isolate: destination}
  vpn:
    chain: [socks5://u:p@127.0.0.1:1080, http://127.0.0.1:8118]
    isolate: user
  old: socks5h://127.0.0.1:9050
  pool: {failover: [tor, old]}
`
	cfg, err := Parse("sluice.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if u := cfg.Upstreams["tor"]; u.Isolate != "destination" || !slices.Equal(u.Chain, []string{"socks5h://127.0.0.1:9050"}) {
		t.Errorf("tor: %+v", u)
	}
	if u := cfg.Upstreams["vpn"]; u.Isolate != "user" || len(u.Chain) != 2 {
		t.Errorf("vpn: %+v", u)
	}
	if u := cfg.Upstreams["old"]; u.Isolate != "" || len(u.Chain) != 1 {
		t.Errorf("old: %+v", u)
	}
	bad := []struct{ src, want string }{
		{"upstreams:\n  t: {url: \"socks5h://u:p@127.0.0.1:9050\", isolate: client}\n", "sluice.yaml:2: upstream \"t\": isolate: the last hop socks5h://u:xxxxx@127.0.0.1:9050 has credentials"},
		{"upstreams:\n  t: {url: \"socks4a://127.0.0.1:9050\", isolate: user}\n", "socks4a"},
		{"upstreams:\n  t: {url: \"socks5h://127.0.0.1:9050\", isolate: yes}\n", `unknown mode "yes" (want none, client, user, destination)`},
		{"upstreams:\n  a: socks5h://127.0.0.1:9050\n  t:\n    failover: [a]\n    isolate: client\n", "sluice.yaml:5: upstream \"t\": isolate: applies to a chain only"},
		{"upstreams:\n  t: {url: \"socks5h://127.0.0.1:9050\", chain: [\"socks5h://127.0.0.1:9051\"]}\n", "one of chain or url"},
	}
	for _, c := range bad {
		_, err := Parse("sluice.yaml", []byte(c.src))
		var pe *ParseError
		if !errors.As(err, &pe) || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), ":p@") {
			t.Errorf("%q: %v, want %q", c.src, err, c.want)
		}
	}
}
