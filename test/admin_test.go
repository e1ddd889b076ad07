package test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// adminAddr returns the admin listener's address from the log line that
// announces it.
func (p *proc) adminAddr(t *testing.T) string {
	t.Helper()
	p.waitLog(t, `admin endpoints at http://`)
	m := regexp.MustCompile(`admin endpoints at http://([^/\s"]+)/`).FindStringSubmatch(p.Log())
	if m == nil {
		t.Fatalf("no admin address in the log:\n%s", p.Log())
	}
	return m[1]
}

// httpGet fetches url directly (no proxy) and returns status and body.
func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}, Timeout: 20 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading the body: %v", url, err)
	}
	return resp.StatusCode, string(b)
}

var goroutineTotalRE = regexp.MustCompile(`^goroutine profile: total (\d+)`)

// goroutines reads the process's goroutine count from the admin listener.
func goroutines(t *testing.T, admin string) int {
	t.Helper()
	code, body := httpGet(t, "http://"+admin+"/debug/pprof/goroutine?debug=1")
	m := goroutineTotalRE.FindStringSubmatch(body)
	if code != 200 || m == nil {
		t.Fatalf("goroutine profile: %d %.200q", code, body)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// TestAdminListener: `admin:` opens health, readiness and profiling
// endpoints on their own address; none of them answers on the proxy port,
// and the proxy does not carry its clients to them.
func TestAdminListener(t *testing.T) {
	p := startSluice(t, "admin: 127.0.0.1:0\nrules:\n  - block: [blocked.test]\n", nil)
	admin := p.adminAddr(t)
	if admin == p.addr {
		t.Fatalf("the admin listener is the proxy listener %s", admin)
	}
	if code, body := httpGet(t, "http://"+admin+"/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz: %d %q", code, body)
	}
	if code, body := httpGet(t, "http://"+admin+"/readyz"); code != 200 || !strings.HasPrefix(body, "ready: 1 rules") {
		t.Errorf("/readyz: %d %q", code, body)
	}
	if n := goroutines(t, admin); n <= 0 {
		t.Errorf("goroutine count %d", n)
	}
	if code, body := httpGet(t, "http://"+admin+"/debug/pprof/"); code != 200 || !strings.Contains(body, "goroutine") {
		t.Errorf("/debug/pprof/: %d %.200q", code, body)
	}
	// Origin-form requests to the proxy port are not the admin endpoints.
	for _, path := range []string{"/healthz", "/readyz", "/debug/pprof/", "/debug/pprof/goroutine?debug=1"} {
		code, body := httpGet(t, "http://"+p.addr+path)
		if code == 200 || strings.Contains(body, "ok\n") && len(body) < 8 || strings.Contains(body, "goroutine") || strings.Contains(body, "ready:") {
			t.Errorf("proxy port %s: %d %.200q: served an admin endpoint", path, code, body)
		}
	}
	// Nor does the proxy carry a client to the admin address: plain HTTP,
	// a CONNECT tunnel and a SOCKS5 tunnel all meet a 403, from the admin
	// listener or from the proxy before it dials (a tunnel refused by the
	// proxy counts as refused too).
	out, code := curl(t, "-i", "-x", "http://"+p.addr, "http://"+admin+"/debug/pprof/goroutine?debug=1")
	if code != 0 || !strings.Contains(out, " 403 ") || strings.Contains(out, "goroutine profile") {
		t.Errorf("the admin address through the proxy: exit %d:\n%.400s", code, out)
	}
	c, br, resp := rawConnect(t, p.addr, admin)
	if resp.StatusCode == 200 {
		if got := getThrough(t, c, br, admin, "/healthz"); !strings.HasPrefix(got, "HTTP/1.1 403") {
			t.Errorf("/healthz through a CONNECT tunnel: %.200q", got)
		}
	} else if resp.StatusCode != 403 {
		t.Errorf("CONNECT to the admin address: %s, want 200 then 403 inside, or 403", resp.Status)
	}
	_, ap, _ := net.SplitHostPort(admin)
	sc, err := net.DialTimeout("tcp", p.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	sc.SetDeadline(time.Now().Add(15 * time.Second))
	sbr := bufio.NewReader(sc)
	if rep, err := socks5Status(sc, sbr, "127.0.0.1", atoi(ap)); err != nil {
		t.Errorf("SOCKS5 to the admin address: %v", err)
	} else if rep == 0 {
		if got := getThrough(t, sc, sbr, admin, "/debug/pprof/goroutine?debug=1"); !strings.HasPrefix(got, "HTTP/1.1 403") || strings.Contains(got, "goroutine profile") {
			t.Errorf("the goroutine profile through a SOCKS5 tunnel: %.200q", got)
		}
	} else if rep != 2 {
		t.Errorf("SOCKS5 to the admin address: reply 0x%02x, want 0x00 then 403 inside, or 0x02", rep)
	}
	if code, body := httpGet(t, "http://"+admin+"/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz directly, after the refusals: %d %q", code, body)
	}

	// A reload leaves the admin listener where it is.
	before := strings.Count(p.Log(), "rules reloaded")
	out, code = runCLI(t, p.dir, "reload", "--pid", strconv.Itoa(p.cmd.Process.Pid))
	if code != 0 {
		t.Fatalf("sluice reload: exit %d: %s", code, out)
	}
	eventually(t, "the reload", func() bool { return strings.Count(p.Log(), "rules reloaded") > before })
	if code, body := httpGet(t, "http://"+admin+"/readyz"); code != 200 {
		t.Errorf("/readyz after a reload: %d %q", code, body)
	}
}

// getThrough sends GET path for host over an open tunnel and returns the
// response's head and body as text.
func getThrough(t *testing.T, c net.Conn, br *bufio.Reader, host, path string) string {
	t.Helper()
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", path, host)
	b, err := io.ReadAll(br)
	if err != nil {
		t.Fatalf("GET %s through a tunnel: %v", path, err)
	}
	return string(b)
}

// TestAdminNonLoopbackNeedsClients: an admin address beyond loopback with
// no admin_clients is refused by serve and validate, naming file and line.
func TestAdminNonLoopbackNeedsClients(t *testing.T) {
	dir, cfg := writeConfig(t, "listen: [\"127.0.0.1:0\"]\ndefault: allow\nadmin: 0.0.0.0:0\n", nil)
	out, code := runCLI(t, dir, "serve", "--config", cfg)
	if code != 2 || !strings.Contains(out, "sluice.yaml:3: admin: 0.0.0.0:0 is not a loopback address") || strings.Contains(out, "listening on") {
		t.Fatalf("serve: exit %d, want 2 with sluice.yaml:3: %s", code, out)
	}
	out, code = runCLI(t, dir, "config", "validate", "--config", cfg)
	if code == 0 || !strings.Contains(out, "sluice.yaml:3: admin:") {
		t.Fatalf("config validate: exit %d: %s", code, out)
	}
}

// TestAdminClientsRefuse: with admin_clients, a client outside them gets
// 403 on every admin path; one inside is served.
func TestAdminClientsRefuse(t *testing.T) {
	// Only 127.0.0.2 may use it; this test's clients come from 127.0.0.1
	// unless they bind 127.0.0.2 (any 127/8 source works on Linux).
	p := startSluice(t, "admin: 127.0.0.1:0\nadmin_clients: [127.0.0.2/32]\n", nil)
	admin := p.adminAddr(t)
	for _, path := range []string{"/healthz", "/readyz", "/debug/pprof/goroutine?debug=1"} {
		if code, body := httpGet(t, "http://"+admin+path); code != 403 || strings.Contains(body, "goroutine") {
			t.Errorf("%s from 127.0.0.1: %d %.100q, want 403", path, code, body)
		}
	}
	out, code := curl(t, "--interface", "127.0.0.2", "http://"+admin+"/healthz")
	if code != 0 || out != "ok\n" {
		t.Errorf("/healthz from 127.0.0.2: exit %d %q", code, out)
	}
	p.waitLog(t, `admin request from outside .admin_clients.; refused`)
}
