package test

import (
	"context"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
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
	return runChromium(t, proxy, "--dump-dom", url)
}

// runChromium runs headless Chromium through proxy with args and returns
// its standard output.
func runChromium(t *testing.T, proxy string, args ...string) string {
	t.Helper()
	bin := requireTool(t, "chromium")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"--headless", "--no-sandbox", "--disable-gpu",
		"--no-first-run", "--disable-background-networking", "--disable-component-update",
		"--disable-sync", "--disable-default-apps", "--user-data-dir=" + t.TempDir(),
		"--proxy-server=" + proxy, "--proxy-bypass-list=<-loopback>", "--ignore-certificate-errors",
		"--virtual-time-budget=5000"}, args...)...)
	out, err := cmd.Output()
	if err != nil && ctx.Err() != nil {
		t.Fatalf("chromium timed out on %v", args)
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

// TestBrowserBlockPage renders the block page of a named rule in Chromium
// at a phone's width: the DOM has the rule's name and the contact but not
// the rule's patterns, and the screenshot is as wide as the phone's
// viewport (the page has the viewport meta and nothing wider).
func TestBrowserBlockPage(t *testing.T) {
	p := startSluice(t, `
default: block
hosts: {games.test: 127.0.0.1}
block_page: {contact: "helpdesk@school.example"}
rules:
  - name: Games during lessons
    block: [games.test, secret-games.test]
`, nil)
	url := "http://games.test:8080/" // never dialed: blocked
	dom := chromium(t, "http://"+p.addr, url)
	for _, want := range []string{"games.test", "Games during lessons", "helpdesk@school.example", "Request id"} {
		if !strings.Contains(dom, want) {
			t.Errorf("block page in Chromium lacks %q:\n%s", want, dom)
		}
	}
	if strings.Contains(dom, "secret-games") {
		t.Errorf("block page in Chromium shows the rule's patterns:\n%s", dom)
	}
	shot := filepath.Join(t.TempDir(), "blockpage.png")
	runChromium(t, "http://"+p.addr, "--window-size=390,844", "--hide-scrollbars", "--screenshot="+shot, url)
	f, err := os.Open(shot)
	if err != nil {
		t.Fatalf("no screenshot: %v", err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	if b := img.Bounds(); b.Dx() != 390 {
		t.Errorf("screenshot is %v, want 390 pixels wide", b)
	}
	t.Logf("block page at 390x844: %s", shot)
}
