package server

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"syscall"
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

// notSelf stands for fromSelf in tests whose clients are this process.
func notSelf(netip.AddrPort, netip.AddrPort) (bool, error) { return false, nil }

// TestAdminEndpoints: /healthz answers while the listener is open, /readyz
// only while the proxy listeners are marked open, /debug/pprof/ gives the
// goroutine profile.
func TestAdminEndpoints(t *testing.T) {
	s, err := New(Options{Config: writeConfig(t, "rules:\n  - block: [a.test]\n", nil), Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	a, err := s.openAdmin(rules.Admin{Addr: "127.0.0.1:0"}, notSelf)
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
	a, err := s.openAdmin(rules.Admin{Addr: "127.0.0.1:0", Clients: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}}, notSelf)
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

// TestAdminRefusesItsOwnProcess: a connection this process opened (as the
// proxy does when a client asks for the admin address) gets 403 and
// nothing else, whatever admin_clients says.
func TestAdminRefusesItsOwnProcess(t *testing.T) {
	s, err := New(Options{Config: writeConfig(t, "default: allow\n", nil), Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	a, err := s.startAdmin(rules.Admin{Addr: "127.0.0.1:0", Clients: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	if err != nil {
		t.Fatal(err)
	}
	defer a.close()
	a.setReady(true)
	for _, path := range []string{"/healthz", "/readyz", "/debug/pprof/goroutine?debug=1"} {
		if code, body := adminGet(t, a, "127.0.0.1", path); code != 403 || !strings.Contains(body, "not served through the proxy") {
			t.Errorf("%s from this process: %d %.80q, want 403", path, code, body)
		}
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
	var le *ListenError
	if !errors.As(err, &le) || le.What != "admin" || !errors.Is(err, syscall.EADDRINUSE) ||
		err.Error() != "server: admin: cannot listen on "+busy.Addr().String()+": address already in use (is another sluice running?)" {
		t.Fatalf("Run with a busy admin address: %v", err)
	}
}

// TestProcAddr: addresses are written as /proc/net/tcp{,6} write them.
func TestProcAddr(t *testing.T) {
	for _, tt := range []struct {
		ap   string
		v6   bool
		want string
	}{
		{"127.0.0.1:8080", false, "0100007F:1F90"},
		{"10.1.2.3:22", false, "0302010A:0016"},
		{"127.0.0.1:8080", true, "0000000000000000FFFF00000100007F:1F90"},
		{"[::1]:443", true, "00000000000000000000000001000000:01BB"},
		{"[::1]:443", false, ""},
	} {
		if got := procAddr(netip.MustParseAddrPort(tt.ap), tt.v6); got != tt.want {
			t.Errorf("procAddr(%s, v6=%v) = %q, want %q", tt.ap, tt.v6, got, tt.want)
		}
	}
}

// TestFromSelf: a connection this process opened is recognized, over IPv4
// and IPv6 loopback.
func TestFromSelf(t *testing.T) {
	for _, network := range []string{"tcp4", "tcp6"} {
		addr := "127.0.0.1:0"
		if network == "tcp6" {
			addr = "[::1]:0"
		}
		ln, err := net.Listen(network, addr)
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		c, err := net.Dial(network, ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		peer := netip.MustParseAddrPort(c.LocalAddr().String())
		local := netip.MustParseAddrPort(ln.Addr().String())
		if self, err := fromSelf(peer, local); !self || err != nil {
			t.Errorf("%s: fromSelf(%s, %s) = %v, %v; want true", network, peer, local, self, err)
		}
		other := netip.AddrPortFrom(peer.Addr(), peer.Port()+1) // no such connection
		if self, err := fromSelf(other, local); self || err != nil {
			t.Errorf("%s: fromSelf for a connection that does not exist = %v, %v", network, self, err)
		}
	}
}
