package test

import (
	"fmt"
	"io"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestReportOnlyRule: a `mode: report` rule allows what it would block,
// logs verdict allow with would_block and the rule, counts it in
// sluice_would_block_total, and never opens what a rule below it blocks;
// `sluice check` says "would block".
func TestReportOnlyRule(t *testing.T) {
	o := newCountOrigin(t, "127.0.0.1:0")
	config := `
admin: 127.0.0.1:0
hosts: {games.test: 127.0.0.1, both.test: 127.0.0.1, fine.test: 127.0.0.1}
rules:
  - block: [games.test, both.test]
    mode: report
    name: games rollout
  - block: [both.test]
  - allow: [fine.test]
`
	p := startSluice(t, config, nil)
	admin := p.adminAddr(t)
	port := o.port

	// Allowed and reported, over HTTP and SOCKS5.
	out, code := curl(t, "-x", "http://"+p.addr, "http://games.test:"+port+"/play")
	if code != 0 || !strings.Contains(out, "origin ") {
		t.Fatalf("games.test through the report rule: %d %q", code, out)
	}
	if c, err := xSOCKS5From("127.0.0.1", p.addr, "games.test:"+port); err != nil {
		t.Fatalf("SOCKS5 games.test: %v", err)
	} else {
		fmt.Fprintf(c, "GET / HTTP/1.0\r\n\r\n")
		b, _ := io.ReadAll(c)
		c.Close()
		if !strings.Contains(string(b), "origin ") {
			t.Errorf("SOCKS5 games.test: %q", b)
		}
	}
	p.waitLog(t, `"target":"games.test:`+port+`".*"verdict":"allow".*"would_block":true,"would_block_rule":"rule 1 \\"games rollout\\" \(sluice.yaml:6\)"`)
	p.waitLog(t, `"cmd":"connect".*"target":"games.test:`+port+`".*"verdict":"allow".*"would_block":true`)

	// The rule below still blocks what both rules match, and nothing is dialed.
	before := o.accepts.Load()
	out, _ = curl(t, "-o", "/dev/null", "-w", "%{http_code}", "-x", "http://"+p.addr, "http://both.test:"+port+"/")
	if out != "403" {
		t.Errorf("both.test: %s, want 403 (the report rule must not open it)", out)
	}
	if n := o.accepts.Load() - before; n != 0 {
		t.Errorf("both.test: the origin accepted %d connections", n)
	}
	// A request no report rule matches has no would_block.
	curl(t, "-x", "http://"+p.addr, "http://fine.test:"+port+"/")
	p.waitLog(t, `"target":"fine.test:`+port+`"`)
	if regexp.MustCompile(`"target":"fine.test:[0-9]+".*would_block`).MatchString(p.Log()) {
		t.Errorf("fine.test logged would_block:\n%s", p.Log())
	}

	fams := scrape(t, admin)
	if v, _ := metricValue(fams, "sluice_would_block_total", "frontend=http", "rule=games rollout"); v != 1 {
		t.Errorf("sluice_would_block_total{http, games rollout} = %v, want 1", v)
	}
	if v, _ := metricValue(fams, "sluice_would_block_total", "frontend=socks5", "rule=games rollout"); v != 1 {
		t.Errorf("sluice_would_block_total{socks5, games rollout} = %v, want 1", v)
	}

	cfg := filepath.Join(p.dir, "sluice.yaml")
	out, code = runCLI(t, p.dir, "check", "--config", cfg, "--no-resolve", "games.test")
	if code != 0 || !strings.Contains(out, "allow games.test:443") || !strings.Contains(out, `would block: rule 1 "games rollout"`) {
		t.Errorf("check games.test: exit %d\n%s", code, out)
	}
	out, code = runCLI(t, p.dir, "check", "--config", cfg, "--no-resolve", "both.test")
	if code != 1 || !strings.Contains(out, "block both.test:443") {
		t.Errorf("check both.test: exit %d\n%s", code, out)
	}
	// mode: report on an allow rule is a config error with file and line.
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	writeFiles(t, filepath.Dir(bad), map[string]string{"bad.yaml": "rules:\n  - allow: [x.test]\n    mode: report\n"})
	out, code = runCLI(t, p.dir, "config", "validate", "--config", bad)
	if code == 0 || !strings.Contains(out, "bad.yaml:2: rule 1: mode: report is for block rules") {
		t.Errorf("validate mode: report on allow: exit %d\n%s", code, out)
	}
}
