package test

import (
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestSafeSearchTLSServerName: through CONNECT, curl's TLS handshake
// reaches the enforcement host's origin and still names www.google.com.
func TestSafeSearchTLSServerName(t *testing.T) {
	var sni atomic.Pointer[string]
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "enforced host=%s", r.Host)
	}))
	ln, err := net.Listen("tcp", "127.0.0.62:0")
	if err != nil {
		t.Fatal(err)
	}
	srv.Listener = ln
	srv.TLS = &tls.Config{GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
		s := h.ServerName
		sni.Store(&s)
		return nil, nil
	}}
	srv.StartTLS()
	defer srv.Close()
	port := fmt.Sprint(portOf(ln.Addr().String()))
	p := startSluice(t, `
hosts: {www.google.com: 127.0.0.61, forcesafesearch.google.com: 127.0.0.62}
rules:
  - safesearch: {google: strict}
`, nil)
	out, code := curl(t, "-k", "-x", "http://"+p.addr, "https://www.google.com:"+port+"/search")
	if code != 0 || out != "enforced host=www.google.com:"+port {
		t.Fatalf("curl: %d %q", code, out)
	}
	if s := sni.Load(); s == nil || *s != "www.google.com" {
		t.Errorf("TLS server name %v, want www.google.com", s)
	}
	p.waitLog(t, `"target":"www.google.com:`+port+`".*"peer":"127.0.0.62"`)
	p.waitLog(t, `"safesearch":"forcesafesearch.google.com"`)
}

// TestSafeSearchGuardAndUpstream: the dial-time guard decides the
// enforcement host's addresses (a CIDR rule blocking them refuses the
// request, nothing dialed); through an upstream route the upstream is asked
// for the enforcement host; SOCKS5 UDP datagrams go to the enforcement
// host; `sluice check` shows the enforcement host.
func TestSafeSearchGuardAndUpstream(t *testing.T) {
	const real, enforced = "127.0.0.71", "127.0.0.72"
	port, o := newHostOrigins(t, real, enforced)

	// The guard: the enforcement address is blocked by a CIDR rule.
	g := startSluice(t, fmt.Sprintf(`
hosts: {www.bing.com: %s, strict.bing.com: %s}
rules:
  - block: ["%s/32"]
  - safesearch: {bing: strict}
`, real, enforced, enforced), nil)
	resp, body, _, _ := connectFrom(t, "127.0.0.1", g.addr, "www.bing.com:"+port)
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("CONNECT with the enforcement address blocked: %s %s", resp.Status, body)
	}
	if a, b := o[real].accepts.Load(), o[enforced].accepts.Load(); a+b != 0 {
		t.Errorf("origins accepted %d (real) and %d (enforced), want none", a, b)
	}

	// The upstream: a second sluice, which alone knows the names.
	up := startSluice(t, fmt.Sprintf(`
hosts: {www.bing.com: %s, strict.bing.com: %s}
`, real, enforced), nil)
	p := startSluice(t, fmt.Sprintf(`
upstreams: {up: "socks5://%s"}
upstream: up
rules:
  - safesearch: {bing: strict}
`, up.addr), nil)
	resp, body, c, br := connectFrom(t, "127.0.0.1", p.addr, "www.bing.com:"+port)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("CONNECT via upstream: %s %s", resp.Status, body)
	}
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: www.bing.com\r\nConnection: close\r\n\r\n")
	inner, _ := io.ReadAll(br)
	c.Close() // the tunnels, and their access lines, end
	if !strings.Contains(string(inner), enforced+" host=www.bing.com") {
		t.Errorf("via upstream: %q", inner)
	}
	up.waitLog(t, `"cmd":"connect".*"target":"strict.bing.com:`+port+`"`)
	if n := o[real].accepts.Load(); n != 0 {
		t.Errorf("the real host accepted %d", n)
	}
	out, code := runCLI(t, p.dir, "check", "-c", filepath.Join(p.dir, "sluice.yaml"), "--no-resolve", "www.bing.com")
	if code != 0 || !strings.Contains(out, "safesearch: connects to strict.bing.com instead") {
		t.Errorf("check: %d %s", code, out)
	}
}

// TestSafeSearchSOCKSUDP: a SOCKS5 UDP datagram (QUIC) to an engine's host
// goes to the enforcement host.
func TestSafeSearchSOCKSUDP(t *testing.T) {
	port, gotReal := udpPeer(t, "127.0.0.81:0", nil)
	udpPeer(t, fmt.Sprintf("127.0.0.82:%d", port), func(b []byte) []byte { // echo, marked
		return append([]byte("enforced:"), b...)
	})
	p := startSluice(t, `
socks: {udp: true}
hosts: {www.youtube.com: 127.0.0.81, restrict.youtube.com: 127.0.0.82}
rules:
  - safesearch: {youtube: strict}
`, nil)
	ctl := dialFrom(t, "127.0.0.1", p.addr)
	ctl.Write([]byte{5, 1, 0})
	var sel [2]byte
	if _, err := io.ReadFull(ctl, sel[:]); err != nil || sel != [2]byte{5, 0} {
		t.Fatalf("method selection: %v %v", sel, err)
	}
	ctl.Write([]byte{5, 3, 0, 1, 0, 0, 0, 0, 0, 0})
	var rep [10]byte
	if _, err := io.ReadFull(ctl, rep[:]); err != nil || rep[1] != 0 || rep[3] != 1 {
		t.Fatalf("UDP ASSOCIATE reply %v: %v", rep, err)
	}
	uc, err := net.DialUDP("udp", nil, &net.UDPAddr{IP: net.IP(rep[4:8]), Port: int(binary.BigEndian.Uint16(rep[8:10]))})
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	host := "www.youtube.com"
	b := append([]byte{0, 0, 0, 3, byte(len(host))}, host...)
	uc.Write(append(binary.BigEndian.AppendUint16(b, uint16(port)), "quic"...))
	uc.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 2048)
	n, err := uc.Read(buf)
	if err != nil || !strings.HasSuffix(string(buf[:n]), "enforced:quic") {
		t.Fatalf("datagram: %q %v", buf[:n], err)
	}
	if n := gotReal.Load(); n != 0 {
		t.Errorf("the real host received %d datagrams", n)
	}
}
