package test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func writeConfig(t *testing.T, config string, files map[string]string) (dir, path string) {
	t.Helper()
	dir = t.TempDir()
	writeFiles(t, dir, files)
	path = filepath.Join(dir, "sluice.yaml")
	writeFiles(t, dir, map[string]string{"sluice.yaml": config})
	return dir, path
}

// TestCheck covers `sluice check`: first line, deciding rule, category,
// exit status 0 allowed, 1 blocked, 2 error.
func TestCheck(t *testing.T) {
	dir, cfg := writeConfig(t, coreConfig, map[string]string{"lists/social.txt": "# social\ncat.test\nfacebook.com\n"})
	cases := []struct {
		args  []string
		code  int
		first string
		more  []string
	}{
		{[]string{"www.facebook.com"}, 1, "block www.facebook.com:443", []string{"rule 4", "category:social", "category: social", "social.txt:3"}},
		{[]string{"http://WWW.Allowed.Test./x"}, 0, "allow www.allowed.test:80", []string{"rule 7", "route: direct"}},
		{[]string{"exact.test:8080"}, 1, "block exact.test:8080", []string{"rule 1 (sluice.yaml:14)"}},
		{[]string{"--client", "127.0.0.3", "zone.test"}, 1, "block zone.test:443", []string{"rule 6"}},
		{[]string{"--client", "127.0.0.4", "zone.test"}, 0, "allow zone.test:443", []string{"default"}},
		{[]string{"10.1.1.1"}, 0, "allow 10.1.1.1:443", nil},
		{[]string{"127.0.0.2"}, 1, "block 127.0.0.2:443", []string{"127.0.0.2/32"}},
	}
	for _, c := range cases {
		out, code := runCLI(t, dir, append([]string{"check", "--config", cfg}, c.args...)...)
		if code != c.code || !strings.HasPrefix(out, c.first) {
			t.Errorf("check %v: exit %d, want %d; output:\n%s", c.args, code, c.code, out)
			continue
		}
		for _, m := range c.more {
			if !strings.Contains(out, m) {
				t.Errorf("check %v: output lacks %q:\n%s", c.args, m, out)
			}
		}
	}
	if out, code := runCLI(t, dir, "check", "--config", cfg, "bad host name!"); code != 2 {
		t.Errorf("bad target: exit %d, want 2: %s", code, out)
	}
}

// TestConfigErrorsNameFileAndLine: validate and serve both refuse a broken
// config with file:line: problem.
func TestConfigErrorsNameFileAndLine(t *testing.T) {
	bad := "default: allow\nrules:\n  - allow: [\".ok.test\"]\n  - block: [\"category:nosuch\"]\n"
	dir, cfg := writeConfig(t, bad, nil)
	want := regexp.MustCompile(regexp.QuoteMeta(cfg) + `:4: .*nosuch`)
	out, code := runCLI(t, dir, "config", "validate", "--config", cfg)
	if code != 2 || !want.MatchString(out) {
		t.Errorf("validate: exit %d, output:\n%s", code, out)
	}
	out, code = runCLI(t, dir, "serve", "--config", cfg)
	if code != 2 || !want.MatchString(out) {
		t.Errorf("serve: exit %d, output:\n%s", code, out)
	}
	_, good := writeConfig(t, coreConfig, map[string]string{"lists/social.txt": "cat.test\n"})
	out, code = runCLI(t, dir, "config", "validate", "--config", good)
	if code != 0 || !strings.Contains(out, "ok") {
		t.Errorf("validate good config: exit %d:\n%s", code, out)
	}
}

// TestConfigDefaultAndVersion: the embedded default config prints, parses,
// and listens on loopback.
func TestConfigDefaultAndVersion(t *testing.T) {
	dir := t.TempDir()
	out, code := runCLI(t, dir, "config", "default")
	if code != 0 || !strings.Contains(out, "127.0.0.1:3128") {
		t.Fatalf("config default: exit %d:\n%s", code, out)
	}
	p := filepath.Join(dir, "default.yaml")
	if err := os.WriteFile(p, []byte(out), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, code := runCLI(t, dir, "config", "validate", "--config", p); code != 0 {
		t.Fatalf("the printed default does not validate: %s", out)
	}
	if out, code := runCLI(t, dir, "version"); code != 0 || !strings.HasPrefix(out, "sluice ") {
		t.Fatalf("version: %d %s", code, out)
	}
}

// TestRefusesOpenProxy: a non-loopback listener without clients or users is
// refused with an explanation, and allowed with --allow-open.
func TestRefusesOpenProxy(t *testing.T) {
	dir, cfg := writeConfig(t, "listen: [\"0.0.0.0:0\"]\n", nil)
	out, code := runCLI(t, dir, "serve", "--config", cfg)
	if code == 0 || !strings.Contains(out, "open prox") || !strings.Contains(out, "--allow-open") {
		t.Fatalf("want a refusal naming the risk and --allow-open; exit %d:\n%s", code, out)
	}
	p := runSluice(t, dir, "serve", "--config", cfg, "--allow-open")
	if !strings.Contains(p.addr, ":") {
		t.Fatalf("no address: %q", p.addr)
	}
	_, cfg2 := writeConfig(t, "listen: [\"0.0.0.0:0\"]\nclients: [127.0.0.0/8]\n", nil)
	runSluice(t, dir, "serve", "--config", cfg2)
}
