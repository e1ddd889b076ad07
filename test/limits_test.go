package test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
)

// dialFrom connects to addr from the loopback address local (all of
// 127.0.0.0/8 is local on Linux), so that one test can be several clients.
// limitConnect sends CONNECT target from local and returns the status code.
// The connection stays open (a tunnel when the code is 200).
func limitConnect(t *testing.T, local, proxy, target string) (int, net.Conn, *bufio.Reader) {
	t.Helper()
	c := dialFrom(t, local, proxy)
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		t.Fatalf("CONNECT from %s: %v", local, err)
	}
	return resp.StatusCode, c, br
}

// limitSOCKS5 sends a SOCKS5 CONNECT to target from local and returns the
// method the server chose and its reply code.
func limitSOCKS5(t *testing.T, local, proxy string, port int) (method, reply byte) {
	t.Helper()
	c := dialFrom(t, local, proxy)
	defer c.Close()
	c.Write([]byte{5, 1, 0})
	var sel [2]byte
	if _, err := io.ReadFull(c, sel[:]); err != nil {
		t.Fatalf("SOCKS5 greeting from %s: %v", local, err)
	}
	if sel[1] != 0 {
		return sel[1], 0xff
	}
	c.Write([]byte{5, 1, 0, 1, 127, 0, 0, 1, byte(port >> 8), byte(port)})
	var head [2]byte
	if _, err := io.ReadFull(c, head[:]); err != nil {
		t.Fatalf("SOCKS5 reply from %s: %v", local, err)
	}
	return sel[1], head[1]
}

// socks4From sends a SOCKS4 CONNECT from local and returns the reply code.
func socks4From(t *testing.T, local, proxy string, port int) byte {
	t.Helper()
	c := dialFrom(t, local, proxy)
	defer c.Close()
	c.Write([]byte{4, 1, byte(port >> 8), byte(port), 127, 0, 0, 1, 'u', 0})
	var head [2]byte
	if _, err := io.ReadFull(c, head[:]); err != nil {
		t.Fatalf("SOCKS4 reply from %s: %v", local, err)
	}
	return head[1]
}

// TestLimitsPerClient: beyond `per_client` a client's new connections get
// 503 (HTTP) or 0x01 / 0x5B (SOCKS5 / SOCKS4) without reaching the origin,
// with one log line, not one per attempt; other clients are served; a
// closed connection makes room again.
func TestLimitsPerClient(t *testing.T) {
	echo := newLineEcho(t, false)
	p := startSluice(t, "limits: {max_conns: 1000, per_client: 3}\n", nil)
	target := "127.0.0.1:" + strconv.Itoa(echo.port)
	var first net.Conn
	for i := range 3 {
		code, c, br := limitConnect(t, "127.0.0.1", p.addr, target)
		if code != 200 {
			t.Fatalf("tunnel %d within the limit: %d", i+1, code)
		}
		if e := echoLine(c, br, "hi"); e != "" {
			t.Fatalf("tunnel %d: %s", i+1, e)
		}
		if i == 0 {
			first = c
		}
	}
	if code, _, _ := limitConnect(t, "127.0.0.1", p.addr, target); code != http.StatusServiceUnavailable {
		t.Fatalf("CONNECT beyond per_client: %d, want 503", code)
	}
	out, _ := curl(t, "-i", "-x", "http://"+p.addr, "http://"+target+"/")
	if !strings.HasPrefix(out, "HTTP/1.1 503") {
		t.Fatalf("curl beyond per_client: %q, want 503", out)
	}
	if m, r := limitSOCKS5(t, "127.0.0.1", p.addr, echo.port); m != 0 || r != 0x01 {
		t.Fatalf("SOCKS5 beyond per_client: method 0x%02x reply 0x%02x, want method 0x00 then reply 0x01", m, r)
	}
	if r := socks4From(t, "127.0.0.1", p.addr, echo.port); r != 0x5B {
		t.Fatalf("SOCKS4 beyond per_client: reply 0x%02x, want 0x5B", r)
	}
	for i := range 200 {
		if code, c, _ := limitConnect(t, "127.0.0.1", p.addr, target); code != http.StatusServiceUnavailable {
			t.Fatalf("attempt %d beyond per_client: %d, want 503", i, code)
		} else {
			c.Close()
		}
	}
	if n := echo.accepts.Load(); n != 3 {
		t.Fatalf("the origin accepted %d connections, want 3: a refused client reached it", n)
	}
	if n := strings.Count(p.Log(), "connection limit reached"); n != 1 {
		t.Fatalf("%d log lines about the limit after 204 refusals, want 1; log:\n%s", n, p.Log())
	}

	// Another client is not limited by this one.
	if code, c, br := limitConnect(t, "127.0.0.2", p.addr, target); code != 200 {
		t.Fatalf("another client: %d, want 200", code)
	} else if e := echoLine(c, br, "other"); e != "" {
		t.Fatalf("another client's tunnel: %s", e)
	}
	// A closed tunnel makes room.
	first.Close()
	eventually(t, "a closed tunnel frees its slot", func() bool {
		code, c, _ := limitConnect(t, "127.0.0.1", p.addr, target)
		c.Close()
		return code == 200
	})
}

// TestLimitsMaxConns: beyond `max_conns` every client is refused.
func TestLimitsMaxConns(t *testing.T) {
	echo := newLineEcho(t, false)
	p := startSluice(t, "limits: {max_conns: 2}\n", nil)
	target := "127.0.0.1:" + strconv.Itoa(echo.port)
	for _, local := range []string{"127.0.0.1", "127.0.0.2"} {
		if code, _, _ := limitConnect(t, local, p.addr, target); code != 200 {
			t.Fatalf("tunnel from %s within max_conns: %d", local, code)
		}
	}
	if code, _, _ := limitConnect(t, "127.0.0.3", p.addr, target); code != http.StatusServiceUnavailable {
		t.Fatalf("CONNECT beyond max_conns: %d, want 503", code)
	}
	if _, r := limitSOCKS5(t, "127.0.0.3", p.addr, echo.port); r != 0x01 {
		t.Fatalf("SOCKS5 beyond max_conns: reply 0x%02x, want 0x01", r)
	}
	// The tunnels go to an IP address and are sniffed (sniff: ip): each is
	// dialed once its client has stayed silent for the first-byte wait.
	eventually(t, "the two tunnels within max_conns are dialed", func() bool { return echo.accepts.Load() == 2 })
	p.waitLog(t, `connection limit reached.*"limit":"max_conns"`)
	if n := echo.accepts.Load(); n != 2 {
		t.Fatalf("the origin accepted %d connections, want 2", n)
	}
}
