package test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const pacContentType = "application/x-ns-proxy-autoconfig"

// getPAC fetches url without a proxy and returns status, content type and body.
func getPAC(t *testing.T, url string) (int, string, string) {
	t.Helper()
	cl := &http.Client{Transport: &http.Transport{Proxy: nil}, Timeout: 30 * time.Second}
	resp, err := cl.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Content-Type"), string(body)
}

// TestPACServed: the proxy port answers GET /proxy.pac and /wpad.dat with
// a PAC file for the address the client reached, as does the admin
// listener (for the proxy port); other origin-form requests still get
// 400; a Host header that is not a host name never reaches the script.
func TestPACServed(t *testing.T) {
	p := startSluice(t, `
admin: 127.0.0.1:0
pac:
  bypass: [intranet.school.example, 10.0.0.0/8]
`, nil)
	want := fmt.Sprintf(`return "PROXY %s; SOCKS5 %s";`, p.addr, p.addr)
	for _, url := range []string{"http://" + p.addr + "/proxy.pac", "http://" + p.addr + "/wpad.dat", "http://" + p.adminAddr(t) + "/proxy.pac", "http://" + p.adminAddr(t) + "/wpad.dat"} {
		code, ct, body := getPAC(t, url)
		if code != 200 || ct != pacContentType || !strings.Contains(body, want) ||
			!strings.Contains(body, `dnsDomainIs(host, ".intranet.school.example")) return "DIRECT"`) ||
			!strings.Contains(body, `isInNet(host, "10.0.0.0", "255.0.0.0")`) {
			t.Errorf("%s: %d %s\n%s", url, code, ct, body)
		}
	}
	if code, _, _ := getPAC(t, "http://"+p.addr+"/other"); code != http.StatusBadRequest {
		t.Errorf("GET /other on the proxy port: %d, want 400", code)
	}
	p.waitLog(t, `"msg":"access".*"method":"GET","target":"`+p.addr+`","path":"/proxy.pac","verdict":"none","reason":"local","status":200`)

	// A Host header Go's server accepts but that is no host name: the
	// script names the address the connection reached instead.
	c, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /proxy.pac HTTP/1.1\r\nHost: x'+alert(1)+'\r\nConnection: close\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	raw, _ := io.ReadAll(c)
	if strings.Contains(string(raw), "alert") || !strings.Contains(string(raw), want) {
		t.Errorf("Host reflected into the PAC file:\n%s", raw)
	}
}

// TestPACObeysClients: a client outside `clients` gets no PAC file.
func TestPACObeysClients(t *testing.T) {
	p := startSluice(t, "clients: [127.0.0.2/32]\n", nil)
	out, code := curl(t, "http://"+p.addr+"/proxy.pac")
	if code == 0 || strings.Contains(out, "FindProxyForURL") {
		t.Errorf("a client outside `clients` got the PAC file (curl exit %d):\n%s", code, out)
	}
	out, code = curl(t, "--interface", "127.0.0.2", "http://"+p.addr+"/proxy.pac")
	if code != 0 || !strings.Contains(out, "FindProxyForURL") {
		t.Errorf("a client inside `clients` got no PAC file (curl exit %d):\n%s", code, out)
	}
}

// TestPACCommand: `sluice pac` prints the replicas of `pac: proxies`,
// else the listen address or --host; a bad entry is refused with file
// and line.
func TestPACCommand(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"replicas.yaml": "listen: [\"127.0.0.1:3128\"]\npac:\n  proxies: [gw1.school.example:3128, gw2.school.example:3128]\n  fallback_direct: true\n",
		"single.yaml":   "listen: [\"0.0.0.0:8080\"]\nclients: [10.0.0.0/8]\n",
		"bad.yaml":      "pac:\n  bypass:\n    - 'x\" || true || \"'\n",
	})
	out, code := runCLI(t, dir, "pac", "--config", filepath.Join(dir, "replicas.yaml"))
	if code != 0 || !strings.Contains(out, `return "PROXY gw1.school.example:3128; PROXY gw2.school.example:3128; SOCKS5 gw1.school.example:3128; SOCKS5 gw2.school.example:3128; DIRECT";`) {
		t.Errorf("replicas (exit %d):\n%s", code, out)
	}
	out, code = runCLI(t, dir, "pac", "--config", filepath.Join(dir, "single.yaml"), "--host", "proxy.school.example")
	if code != 0 || !strings.Contains(out, `return "PROXY proxy.school.example:8080; SOCKS5 proxy.school.example:8080";`) {
		t.Errorf("--host (exit %d):\n%s", code, out)
	}
	out, code = runCLI(t, dir, "pac")
	if code != 0 || !strings.Contains(out, `return "PROXY 127.0.0.1:3128; SOCKS5 127.0.0.1:3128";`) {
		t.Errorf("default config (exit %d):\n%s", code, out)
	}
	out, code = runCLI(t, dir, "pac", "--config", filepath.Join(dir, "bad.yaml"))
	if code != 2 || !strings.Contains(out, "bad.yaml:3: pac: bypass: invalid entry") {
		t.Errorf("bad entry (exit %d):\n%s", code, out)
	}
	out, code = runCLI(t, dir, "pac", "--host", `a");alert(1);("`)
	if code != 2 || strings.Contains(out, "FindProxyForURL") {
		t.Errorf("a bad --host was printed (exit %d):\n%s", code, out)
	}
}

// sameIPPair returns count origins on 127.0.0.1 and 127.0.0.2 sharing a
// port: a URL's port then reaches one or the other depending only on the
// address its host name resolved to.
func sameIPPair(t *testing.T) (real, trap *countOrigin) {
	t.Helper()
	for range 20 {
		real = newCountOrigin(t, "127.0.0.1:0")
		ln, err := net.Listen("tcp", "127.0.0.2:"+real.port)
		if err != nil {
			continue
		}
		ln.Close()
		return real, newCountOrigin(t, "127.0.0.2:"+real.port)
	}
	t.Fatal("no port free on both 127.0.0.1 and 127.0.0.2")
	return nil, nil
}

// TestBrowserPAC: headless Chromium configured only with the PAC URL of
// the proxy port sends proxied.test through Sluice and reaches
// bypassed.test directly. Sluice and Chromium resolve each name to
// different addresses (Sluice's hosts: and Chromium's resolver rules), so
// the origin that counts an accept tells which path the page took.
func TestBrowserPAC(t *testing.T) {
	viaSluice, proxiedTrap := sameIPPair(t) // proxied.test: Sluice → .1, Chromium → .2
	bypassTrap, direct := sameIPPair(t)     // bypassed.test: Sluice → .1, Chromium → .2
	p := startSluice(t, `
default: block
hosts: {proxied.test: 127.0.0.1, bypassed.test: 127.0.0.1}
rules:
  - allow: [proxied.test, bypassed.test]
pac:
  bypass: [bypassed.test]
`, nil)
	bin := requireTool(t, "chromium")
	load := func(url string) string {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, "--headless", "--no-sandbox", "--disable-gpu",
			"--no-first-run", "--disable-background-networking", "--disable-component-update",
			"--disable-sync", "--disable-default-apps", "--user-data-dir="+t.TempDir(),
			"--proxy-pac-url=http://"+p.addr+"/proxy.pac",
			"--host-resolver-rules=MAP proxied.test 127.0.0.2, MAP bypassed.test 127.0.0.2",
			"--virtual-time-budget=5000", "--dump-dom", url)
		out, _ := cmd.Output()
		if ctx.Err() != nil {
			t.Fatalf("chromium timed out on %s", url)
		}
		return string(out)
	}
	dom := load("http://proxied.test:" + viaSluice.port + "/through")
	if !strings.Contains(dom, "origin "+viaSluice.addr+" /through") {
		t.Errorf("proxied page:\n%s", dom)
	}
	dom = load("http://bypassed.test:" + direct.port + "/direct")
	if !strings.Contains(dom, "origin "+direct.addr+" /direct") {
		t.Errorf("bypassed page:\n%s", dom)
	}
	if viaSluice.accepts.Load() == 0 || proxiedTrap.accepts.Load() != 0 {
		t.Errorf("proxied.test: %d accepts through Sluice, %d direct; want some, none", viaSluice.accepts.Load(), proxiedTrap.accepts.Load())
	}
	if direct.accepts.Load() == 0 || bypassTrap.accepts.Load() != 0 {
		t.Errorf("bypassed.test: %d accepts direct, %d through Sluice; want some, none", direct.accepts.Load(), bypassTrap.accepts.Load())
	}
	p.waitLog(t, `"msg":"access".*"target":"proxied.test:`+viaSluice.port+`","path":"/through"`)
	if strings.Contains(p.Log(), `"target":"bypassed.test`) {
		t.Errorf("bypassed.test went through Sluice:\n%s", p.Log())
	}
}
