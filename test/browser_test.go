package test

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// browserConfig blocks by default, so that whatever a browser fetches on
// its own (updates, safe browsing) is refused by Sluice without a dial and
// the test's traffic stays on loopback.
const browserConfig = `
default: block
hosts: {allowed.test: 127.0.0.1, blocked.test: 127.0.0.1}
rules:
  - allow: [allowed.test]
`

// chromium loads url in headless Chromium through proxy and returns the DOM.
func chromium(t *testing.T, proxy, url string) string {
	t.Helper()
	bin := requireTool(t, "chromium")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--headless", "--no-sandbox", "--disable-gpu",
		"--no-first-run", "--disable-background-networking", "--disable-component-update",
		"--disable-sync", "--disable-default-apps", "--user-data-dir="+t.TempDir(),
		"--proxy-server="+proxy, "--proxy-bypass-list=<-loopback>", "--ignore-certificate-errors",
		"--virtual-time-budget=5000", "--dump-dom", url)
	out, err := cmd.Output()
	if err != nil && ctx.Err() != nil {
		t.Fatalf("chromium timed out on %s", url)
	}
	return string(out)
}

// TestBrowser points a real browser at Sluice: as an HTTP proxy (plain and
// HTTPS through CONNECT) and as a SOCKS5 proxy, and checks the block page.
func TestBrowser(t *testing.T) {
	plain := newOrigin(t, false)
	tlsO := newOrigin(t, true)
	p := startSluice(t, browserConfig, nil)
	for _, c := range []struct{ proxy, url, want string }{
		{"http://" + p.addr, "http://allowed.test:" + plain.port + "/page", "hello from origin host=allowed.test"},
		{"http://" + p.addr, "https://allowed.test:" + tlsO.port + "/secure", "hello from origin host=allowed.test"},
		{"socks5://" + p.addr, "http://allowed.test:" + plain.port + "/socks", "path=/socks"},
		{"http://" + p.addr, "http://blocked.test:" + plain.port + "/", "blocked.test"},
	} {
		dom := chromium(t, c.proxy, c.url)
		if !strings.Contains(dom, c.want) {
			t.Errorf("%s via %s: page lacks %q:\n%s", c.url, c.proxy, c.want, dom)
		}
	}
	dom := chromium(t, "http://"+p.addr, "http://blocked.test:"+plain.port+"/")
	if !strings.Contains(strings.ToLower(dom), "blocked") || !strings.Contains(dom, "default") {
		t.Errorf("block page does not say it is blocked and by what:\n%s", dom)
	}
}
