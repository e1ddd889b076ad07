package server

import (
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice/rules"
)

// adminGet fetches path from the admin listener a, from the local address
// from (an IP on loopback), and returns status and body.
func adminGet(t *testing.T, a *adminServer, from, path string) (int, string) {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	tr := &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + a.ln.Addr().String() + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestAdminEndpoints: /healthz answers while the listener is open, /readyz
// only while the proxy listeners are marked open, /debug/pprof/ gives the
// goroutine profile.
func TestAdminEndpoints(t *testing.T) {
	s, err := New(Options{Config: writeConfig(t, "rules:\n  - block: [a.test]\n", nil), Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	a, err := s.startAdmin(rules.Admin{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer a.close()
	if code, body := adminGet(t, a, "127.0.0.1", "/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz: %d %q", code, body)
	}
	if code, body := adminGet(t, a, "127.0.0.1", "/readyz"); code != 503 || !strings.Contains(body, "listeners are not open") {
		t.Errorf("/readyz before the listeners are open: %d %q, want 503", code, body)
	}
	a.setReady(true)
	if code, body := adminGet(t, a, "127.0.0.1", "/readyz"); code != 200 || !strings.HasPrefix(body, "ready: 1 rules") {
		t.Errorf("/readyz: %d %q", code, body)
	}
	a.setReady(false) // shutdown has begun
	if code, _ := adminGet(t, a, "127.0.0.1", "/readyz"); code != 503 {
		t.Errorf("/readyz once shutdown has begun: %d, want 503", code)
	}
	if code, body := adminGet(t, a, "127.0.0.1", "/debug/pprof/goroutine?debug=1"); code != 200 || !strings.HasPrefix(body, "goroutine profile: total ") {
		t.Errorf("goroutine profile: %d %.80q", code, body)
	}
	if code, _ := adminGet(t, a, "127.0.0.1", "/nosuch"); code != 404 {
		t.Errorf("/nosuch: %d, want 404", code)
	}
	addr := a.ln.Addr().String()
	a.close()
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Errorf("the admin listener still accepts after close")
	}
}

// TestAdminClients: with admin_clients set, other addresses get 403 and
// nothing else, on every path.
func TestAdminClients(t *testing.T) {
	s, err := New(Options{Config: writeConfig(t, "default: allow\n", nil), Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	a, err := s.startAdmin(rules.Admin{Addr: "127.0.0.1:0", Clients: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}})
	if err != nil {
		t.Fatal(err)
	}
	defer a.close()
	for _, path := range []string{"/healthz", "/readyz", "/debug/pprof/", "/debug/pprof/goroutine?debug=1", "/debug/pprof/cmdline"} {
		if code, body := adminGet(t, a, "127.0.0.1", path); code != 403 || body != "forbidden\n" {
			t.Errorf("%s from 127.0.0.1: %d %.80q, want 403", path, code, body)
		}
	}
	if code, body := adminGet(t, a, "127.0.0.2", "/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz from 127.0.0.2: %d %q", code, body)
	}
}

// TestAdminListenError: an admin address that cannot be opened fails Run
// before it serves, naming the address.
func TestAdminListenError(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cfg := "listen: [127.0.0.1:0]\nadmin: " + busy.Addr().String() + "\n"
	s, err := New(Options{Config: writeConfig(t, cfg, nil), Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	err = s.Run(t.Context())
	if err == nil || !strings.Contains(err.Error(), "admin listener "+busy.Addr().String()) {
		t.Fatalf("Run with a busy admin address: %v", err)
	}
}
