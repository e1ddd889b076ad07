package test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestTemporaryExceptions: `sluice allow` adds an exception that the running
// proxy applies before every rule within seconds, restricted by --client;
// --list shows it, --remove takes it away, an exception that ends is
// dropped without a reload, and an unusable state file keeps the last good
// exceptions. Origin accepts prove what was dialed.
func TestTemporaryExceptions(t *testing.T) {
	o := newCountOrigin(t, "127.0.0.1:0")
	p := startSluice(t, `
admin: 127.0.0.1:0
hosts: {site.test: 127.0.0.1, www.site.test: 127.0.0.1, brief.test: 127.0.0.1}
rules:
  - block: [.site.test, brief.test]
`, nil)
	cfg := filepath.Join(p.dir, "sluice.yaml")
	status := func(from, host string) string {
		out, _ := curl(t, "--interface", from, "-o", "/dev/null", "-w", "%{http_code}", "-x", "http://"+p.addr, "http://"+host+":"+o.port+"/")
		return out
	}
	// waitStatus polls, bounded, until host answers want from client from.
	waitStatus := func(from, host, want string) {
		t.Helper()
		got := ""
		for i := 0; i < 50; i++ {
			if got = status(from, host); got == want {
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
		t.Fatalf("%s from %s: %s, want %s\n%s", host, from, got, want, p.Log())
	}
	if s := status("127.0.0.1", "www.site.test"); s != "403" {
		t.Fatalf("before: %s", s)
	}
	out, code := runCLI(t, p.dir, "allow", "-c", cfg, "https://Site.Test/page", "--for", "1h", "--client", "127.0.0.1")
	if code != 0 || !strings.Contains(out, "allowed site.test until ") || !strings.Contains(out, "client 127.0.0.1/32") {
		t.Fatalf("allow: %d %s", code, out)
	}
	if _, err := os.Stat(filepath.Join(p.dir, "cache", "exceptions.json")); err != nil {
		t.Fatalf("state file: %v", err)
	}
	waitStatus("127.0.0.1", "www.site.test", "200")
	p.waitLog(t, `"verdict":"allow","reason":"temporary exception","rule":"sluice allow site.test until [^"]+ client 127.0.0.1/32"`)
	// Another client is not covered: blocked, and nothing dialed.
	before := o.accepts.Load()
	if s := status(student, "site.test"); s != "403" {
		t.Errorf("student: %s, want 403", s)
	}
	if n := o.accepts.Load() - before; n != 0 {
		t.Errorf("student: origin accepted %d", n)
	}
	if code, page := httpGet(t, "http://"+p.adminAddr(t)+"/"); code != 200 || !strings.Contains(page, "<td>site.test</td>") || !strings.Contains(page, "<td>127.0.0.1/32</td>") {
		t.Errorf("status page: %d, no row for the exception:\n%.3000s", code, page)
	}
	out, _ = runCLI(t, p.dir, "allow", "-c", cfg, "--list")
	if !strings.Contains(out, "site.test until ") || !strings.Contains(out, "left)") {
		t.Errorf("--list: %s", out)
	}
	out, _ = runCLI(t, p.dir, "check", "-c", cfg, "--no-resolve", "--client", "127.0.0.1", "site.test")
	if !strings.Contains(out, "allow site.test:443: temporary exception") {
		t.Errorf("check: %s", out)
	}

	// An unusable state file keeps the last good exceptions.
	state := filepath.Join(p.dir, "cache", "exceptions.json")
	good, _ := os.ReadFile(state)
	os.WriteFile(state, []byte("[{\"domain\": \"site.test\",\n  oops\n"), 0o644)
	p.waitLog(t, `exceptions: file unusable; keeping the last good exceptions.*exceptions.json:2`)
	if s := status("127.0.0.1", "site.test"); s != "200" {
		t.Errorf("after a broken state file: %s, want 200 (last good)", s)
	}
	os.WriteFile(state, good, 0o644)

	out, code = runCLI(t, p.dir, "allow", "-c", cfg, "--remove", "site.test")
	if code != 0 || !strings.Contains(out, "removed 1 exception(s) for site.test") {
		t.Fatalf("--remove: %d %s", code, out)
	}
	waitStatus("127.0.0.1", "site.test", "403")

	// An exception that ends is dropped by the running proxy, no reload.
	if out, code := runCLI(t, p.dir, "allow", "-c", cfg, "brief.test", "--for", "3s"); code != 0 {
		t.Fatalf("allow brief.test: %s", out)
	}
	waitStatus("127.0.0.1", "brief.test", "200")
	p.waitLog(t, `"msg":"exception ended","exception":"brief.test until `)
	if s := status("127.0.0.1", "brief.test"); s != "403" {
		t.Errorf("brief.test after its end: %s", s)
	}
	if strings.Contains(p.Log(), "rules reloaded") {
		t.Errorf("an exception caused a reload:\n%s", p.Log())
	}

	// Bad input: exit 2 and a reason.
	for _, args := range [][]string{{"x.test", "--for", "0s"}, {"x.test"}, {"192.0.2.1", "--for", "1h"}, {"x.test", "--for", "1h", "--client", "nope"}} {
		out, code := runCLI(t, p.dir, append([]string{"allow", "-c", cfg}, args...)...)
		if code != 2 {
			t.Errorf("allow %v: exit %d, want 2: %s", args, code, out)
		}
	}
}
