package test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestSafeSearchEnforcementHost: a safesearch rule makes the proxy connect
// to the engine's enforcement host (mapped by hosts: to its own loopback
// origin) instead of the engine's host, for plain HTTP, CONNECT and
// SOCKS5, with the client's Host header unchanged; clients the rule does
// not cover, and hosts that are not the engine's search hosts, reach the
// real host. Accepts are counted at each origin.
func TestSafeSearchEnforcementHost(t *testing.T) {
	const real, google, ytMod, bing = "127.0.0.51", "127.0.0.52", "127.0.0.53", "127.0.0.54"
	port, o := newHostOrigins(t, real, google, ytMod, bing)
	p := startSluice(t, fmt.Sprintf(`
hosts:
  www.google.com: %[1]s
  google.co.uk: %[1]s
  mail.google.com: %[1]s
  www.youtube.com: %[1]s
  www.bing.com: %[1]s
  forcesafesearch.google.com: %[2]s
  restrictmoderate.youtube.com: %[3]s
  restrict.youtube.com: %[1]s
  strict.bing.com: %[4]s
rules:
  - block: [blocked.test]
  - safesearch: {google: strict, youtube: moderate}
    clients: ["127.0.0.16/28"]
`, real, google, ytMod, bing), nil)

	reset := func() {
		for _, x := range o {
			x.accepts.Store(0)
		}
	}
	expect := func(what, body, wantOrigin, wantHost string) {
		t.Helper()
		want := wantOrigin + " host=" + wantHost
		if !strings.Contains(body, want) {
			t.Errorf("%s: got %q, want %q", what, body, want)
		}
		for ip, x := range o {
			n := x.accepts.Load()
			// The wanted origin may serve on a connection the proxy pooled.
			if ip == wantOrigin && n > 1 || ip != wantOrigin && n != 0 {
				t.Errorf("%s: origin %s accepted %d connections", what, ip, n)
			}
		}
		reset()
	}

	// Plain HTTP, Go's client from the student network.
	cl := httpClientFrom(t, student, p.addr)
	for _, h := range []string{"www.google.com", "google.co.uk", "WWW.Google.COM."} {
		_, _, body := get(t, cl, "http://"+h+":"+port+"/search?q=x")
		cl.Transport.(*http.Transport).CloseIdleConnections()
		expect("plain "+h, body, google, strings.ToLower(strings.TrimSuffix(h, "."))+":"+port)
	}
	// Plain HTTP with curl.
	out, _ := curl(t, "--interface", student, "-x", "http://"+p.addr, "http://www.youtube.com:"+port+"/watch")
	expect("curl plain www.youtube.com", out, ytMod, "www.youtube.com:"+port)

	// CONNECT: the tunnel reaches the enforcement host; the bytes inside
	// are the client's.
	resp, body, c, br := connectFrom(t, student, p.addr, "www.google.com:"+port)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("CONNECT: %s %s", resp.Status, body)
	}
	fmt.Fprintf(c, "GET /search HTTP/1.1\r\nHost: www.google.com\r\nConnection: close\r\n\r\n")
	inner, err := io.ReadAll(br)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	expect("CONNECT www.google.com", string(inner), google, "www.google.com")

	// SOCKS5 with a name.
	code, sc, sbr := socks5From(t, student, p.addr, "www.youtube.com", portOf("x:"+port))
	if code != 0 {
		t.Fatalf("SOCKS5 www.youtube.com: reply 0x%02x", code)
	}
	fmt.Fprintf(sc, "GET / HTTP/1.1\r\nHost: www.youtube.com\r\nConnection: close\r\n\r\n")
	inner, _ = io.ReadAll(sbr)
	sc.Close()
	expect("SOCKS5 www.youtube.com", string(inner), ytMod, "www.youtube.com")

	// IP-literal tunnels are sniffed (sniff: ip): a CONNECT or SOCKS5
	// CONNECT to the real host's address whose first bytes name
	// www.google.com reaches the enforcement host, not the address asked for.
	resp, body, c, br = connectFrom(t, student, p.addr, real+":"+port)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("CONNECT %s: %s %s", real, resp.Status, body)
	}
	fmt.Fprintf(c, "GET /search HTTP/1.1\r\nHost: www.google.com\r\nConnection: close\r\n\r\n")
	inner, _ = io.ReadAll(br)
	c.Close()
	expect("CONNECT "+real+" sniffed www.google.com", string(inner), google, "www.google.com")
	code, sc, sbr = socks5From(t, student, p.addr, real, portOf("x:"+port))
	if code != 0 {
		t.Fatalf("SOCKS5 %s: reply 0x%02x", real, code)
	}
	fmt.Fprintf(sc, "GET / HTTP/1.1\r\nHost: www.google.com\r\nConnection: close\r\n\r\n")
	inner, _ = io.ReadAll(sbr)
	sc.Close()
	expect("SOCKS5 "+real+" sniffed www.google.com", string(inner), google, "www.google.com")

	// Not the rule's: another engine (bing is not listed), a Google host
	// that is no search, and a client outside the rule's network.
	_, _, body = get(t, cl, "http://www.bing.com:"+port+"/")
	cl.Transport.(*http.Transport).CloseIdleConnections()
	expect("plain www.bing.com (not in the rule)", body, real, "www.bing.com:"+port)
	_, _, body = get(t, cl, "http://mail.google.com:"+port+"/")
	cl.Transport.(*http.Transport).CloseIdleConnections()
	expect("plain mail.google.com", body, real, "mail.google.com:"+port)
	out, _ = curl(t, "--interface", "127.0.0.1", "-x", "http://"+p.addr, "http://www.google.com:"+port+"/")
	expect("plain www.google.com from 127.0.0.1", out, real, "www.google.com:"+port)

	// A pooled connection to the real host is never reused for a client
	// the rule covers: the proxy's pool is keyed by the host dialed.
	teacher := httpClientFrom(t, "127.0.0.1", p.addr)
	_, _, body = get(t, teacher, "http://www.google.com:"+port+"/")
	expect("teacher first", body, real, "www.google.com:"+port)
	_, _, body = get(t, cl, "http://www.google.com:"+port+"/")
	expect("student after teacher", body, google, "www.google.com:"+port)

	// Rules above still decide first.
	if out, _ := curl(t, "--interface", student, "-o", "/dev/null", "-w", "%{http_code}", "-x", "http://"+p.addr, "http://blocked.test:"+port+"/"); out != "403" {
		t.Errorf("blocked.test: %s, want 403", out)
	}
}
