package test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// statusOf fetches url through the proxy and returns the HTTP status line's code.
func statusOf(t *testing.T, p *proc, url string) string {
	t.Helper()
	out, _ := curl(t, "-o", "/dev/null", "-w", "%{http_code}", "-x", "http://"+p.addr, url)
	return out
}

// eventually polls cond for up to 10 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("timed out waiting until %s", what)
}

const reloadConfig = `
hosts: {one.test: 127.0.0.1, two.test: 127.0.0.1, three.test: 127.0.0.1}
categories:
  bad: [lists/bad.txt]
rules:
  - block: ["category:bad"]
`

// TestReloadOnFileChange: the running proxy picks up list and config edits
// without a restart; a broken config keeps the old rules serving.
func TestReloadOnFileChange(t *testing.T) {
	o := newOrigin(t, false)
	p := startSluice(t, reloadConfig, map[string]string{"lists/bad.txt": "# bad sites\none.test\n"})
	url := func(h string) string { return "http://" + h + ":" + o.port + "/" }
	if s := statusOf(t, p, url("one.test")); s != "403" {
		t.Fatalf("one.test: %s, want 403", s)
	}
	if s := statusOf(t, p, url("two.test")); s != "200" {
		t.Fatalf("two.test: %s, want 200", s)
	}
	// A list edit, written by rename as editors and `sluice list add` do.
	list := filepath.Join(p.dir, "lists/bad.txt")
	tmp := list + ".tmp"
	os.WriteFile(tmp, []byte("# bad sites\none.test\ntwo.test\n"), 0o644)
	os.Rename(tmp, list)
	eventually(t, "two.test is blocked after the list edit", func() bool { return statusOf(t, p, url("two.test")) == "403" })

	// A config edit in place.
	cfg := filepath.Join(p.dir, "sluice.yaml")
	data, _ := os.ReadFile(cfg)
	os.WriteFile(cfg, append(data, "  - block: [three.test]\n"...), 0o644)
	eventually(t, "three.test is blocked after the config edit", func() bool { return statusOf(t, p, url("three.test")) == "403" })

	// A broken config: the error is logged and the old rules keep serving.
	os.WriteFile(cfg, append(data, "  - block: [\"category:nosuch\"]\n"...), 0o644)
	p.waitLog(t, `reload failed; keeping the running rules.*sluice.yaml:\d+`)
	if s := statusOf(t, p, url("three.test")); s != "403" {
		t.Fatalf("after a broken reload three.test: %s, want 403 (old rules)", s)
	}
	if s := statusOf(t, p, url("two.test")); s != "403" {
		t.Fatalf("after a broken reload two.test: %s, want 403 (old rules)", s)
	}
	out, code := runCLI(t, p.dir, "config", "validate", "--config", cfg)
	if code != 2 || !strings.Contains(out, "nosuch") {
		t.Fatalf("config validate on the broken file: exit %d: %s", code, out)
	}
}

// TestReloadSignals: SIGHUP and `sluice reload --pid` reload the rules.
func TestReloadSignals(t *testing.T) {
	o := newOrigin(t, false)
	p := startSluice(t, reloadConfig, map[string]string{"lists/bad.txt": "one.test\n"})
	url := "http://two.test:" + o.port + "/"
	before := strings.Count(p.Log(), "rules reloaded")
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually(t, "SIGHUP reloads", func() bool { return strings.Count(p.Log(), "rules reloaded") > before })
	out, code := runCLI(t, p.dir, "reload", "--pid", strconv.Itoa(p.cmd.Process.Pid))
	if code != 0 {
		t.Fatalf("sluice reload: exit %d: %s", code, out)
	}
	eventually(t, "sluice reload reloads", func() bool { return strings.Count(p.Log(), "rules reloaded") > before+1 })
	if s := statusOf(t, p, url); s != "200" {
		t.Fatalf("two.test: %s", s)
	}
}

// TestReloadByConfig: `sluice reload --config FILE` signals the server of
// that config, and finds none for another config.
func TestReloadByConfig(t *testing.T) {
	p := startSluice(t, reloadConfig, map[string]string{"lists/bad.txt": "one.test\n"})
	before := strings.Count(p.Log(), "rules reloaded")
	// A relative path, resolved against the caller's folder as serve's was.
	out, code := runCLI(t, p.dir, "reload", "--config", "sluice.yaml")
	if code != 0 || !strings.Contains(out, strconv.Itoa(p.cmd.Process.Pid)) {
		t.Fatalf("reload --config: exit %d: %s", code, out)
	}
	eventually(t, "the server reloads", func() bool { return strings.Count(p.Log(), "rules reloaded") > before })
	if out, code := runCLI(t, p.dir, "reload", "--config", "other.yaml"); code != 1 {
		t.Fatalf("reload --config other.yaml: exit %d, want 1: %s", code, out)
	}
}
