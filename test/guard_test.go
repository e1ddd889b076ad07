package test

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// Issue 9 items 1-4: the dial-time guard. Every case is tried with real
// clients over HTTP CONNECT, plain HTTP and SOCKS5, and an origin that counts
// TCP accepts proves that nothing reached a refused address.

// student is the client the rules restrict (inside 127.0.0.16/28).
const student = "127.0.0.20"

// TestOwnListenerLoop (item 1): a client the rules restrict cannot go
// through Sluice a second time by making Sluice its own destination (the
// inner request would come from 127.0.0.1, which the rule does not cover),
// however the proxy's address is written.
func TestOwnListenerLoop(t *testing.T) {
	o := newCountOrigin(t, "127.0.0.1:0")
	p := startSluice(t, `
clients: ["127.0.0.1/32", "127.0.0.16/28"]
hosts:
  blocked.test: 127.0.0.1
  self.test: 127.0.0.1
rules:
  - block: [blocked.test]
    clients: ["127.0.0.16/28"]
`, nil)
	port := fmt.Sprint(portOf(p.addr))
	target := "blocked.test:" + o.port

	// The rule holds on the straight way.
	if resp, body, _, _ := connectFrom(t, student, p.addr, target); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("CONNECT %s from %s: %s %s", target, student, resp.Status, body)
	}
	// The proxy as its own destination, however written: 403, reason loop.
	for _, self := range []string{p.addr, "localhost:" + port, "LocalHost.:" + port, "self.test:" + port, "[::ffff:127.0.0.1]:" + port, "127.0.0.1.:" + port} {
		resp, body, c, br := connectFrom(t, student, p.addr, self)
		if resp.StatusCode == http.StatusOK {
			// The hole: the inner request arrives from 127.0.0.1.
			fmt.Fprintf(c, "GET http://%s/inner HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", target, target)
			inner, err := http.ReadResponse(br, nil)
			t.Errorf("CONNECT %s: 200; the inner request got %v %v", self, inner, err)
			continue
		}
		if resp.StatusCode != http.StatusForbidden || resp.Header.Get("X-Sluice-Block") != "loop" {
			t.Errorf("CONNECT %s: %s X-Sluice-Block %q %s; want 403 loop", self, resp.Status, resp.Header.Get("X-Sluice-Block"), body)
		}
	}
	// SOCKS5 CONNECT to the proxy itself, by address and by name: 0x02.
	for _, h := range []string{"127.0.0.1", "localhost", "self.test", "::ffff:127.0.0.1"} {
		if code, c, br := socks5From(t, student, p.addr, h, portOf(p.addr)); code != 0x02 {
			if code == 0 {
				fmt.Fprintf(c, "GET http://%s/inner HTTP/1.0\r\n\r\n", target)
				b, _ := io.ReadAll(br)
				t.Errorf("SOCKS5 %s: reply 0x00; inner: %q", h, b)
			} else {
				t.Errorf("SOCKS5 %s: reply 0x%02x, want 0x02", h, code)
			}
		}
	}
	// golang.org/x/net/proxy as the student's SOCKS5 client.
	if c, err := xSOCKS5From(student, p.addr, "localhost:"+port); err == nil {
		c.Close()
		t.Error("x/net/proxy: SOCKS5 CONNECT to the proxy itself succeeded")
	}
	// curl chaining the proxy through itself: SOCKS5 pre-proxy, HTTP proxy.
	out, code := curl(t, "--interface", student, "--preproxy", "socks5h://"+p.addr, "-x", "http://127.0.0.1:"+port, "http://"+target+"/chained")
	if code == 0 || strings.Contains(out, "origin") {
		t.Errorf("curl --preproxy sluice -x sluice: exit %d: %s", code, out)
	}
	// Plain HTTP to the proxy itself (curl, Go's net/http): 403 loop.
	out, code = curl(t, "--interface", student, "-i", "-x", "http://"+p.addr, "http://localhost:"+port+"/")
	if code != 0 || !strings.Contains(out, " 403 ") || !strings.Contains(out, "X-Sluice-Block: loop") {
		t.Errorf("curl plain to the proxy: exit %d: %s", code, out)
	}
	if st, block, body := get(t, httpClientFrom(t, student, p.addr), "http://127.0.0.1:"+port+"/"); st != 403 || block != "loop" {
		t.Errorf("net/http plain to the proxy: %d %q %s", st, block, body)
	}
	// Whatever the rules say: an unrestricted client is refused too.
	if resp, body, _, _ := connectFrom(t, "127.0.0.1", p.addr, p.addr); resp.StatusCode != http.StatusForbidden {
		t.Errorf("CONNECT to itself from 127.0.0.1: %s %s", resp.Status, body)
	}
	if n := o.accepts.Load(); n != 0 {
		t.Errorf("the origin accepted %d connections; the rule was bypassed", n)
	}
	p.waitLog(t, `"client":"127\.0\.0\.20:\d+","proto":"http","method":"CONNECT","target":"localhost:`+port+`","verdict":"block","reason":"loop"`)
	p.waitLog(t, `"proto":"socks5","cmd":"connect","user":"","target":"self.test:`+port+`","verdict":"block","reason":"loop".*"reply":"0x02"`)
}

// TestOwnWildcardListenerLoop: a listener on 0.0.0.0 is reached through
// any local address; Sluice refuses all of them on its port.
func TestOwnWildcardListenerLoop(t *testing.T) {
	o := newCountOrigin(t, "127.0.0.1:0")
	p := startSluice(t, `
listen: ["0.0.0.0:0"]
clients: ["127.0.0.1/32", "127.0.0.16/28"]
hosts:
  blocked.test: 127.0.0.1
rules:
  - block: [blocked.test]
    clients: ["127.0.0.16/28"]
`, nil)
	port := fmt.Sprint(portOf(p.addr))
	proxyAddr := "127.0.0.1:" + port
	for _, self := range []string{"127.0.0.5:" + port, "127.0.0.1:" + port, "localhost:" + port} {
		resp, body, c, br := connectFrom(t, student, proxyAddr, self)
		if resp.StatusCode == http.StatusOK {
			fmt.Fprintf(c, "GET http://blocked.test:%s/inner HTTP/1.1\r\nHost: blocked.test\r\nConnection: close\r\n\r\n", o.port)
			inner, err := http.ReadResponse(br, nil)
			t.Errorf("CONNECT %s: 200; the inner request got %v %v", self, inner, err)
			continue
		}
		if resp.StatusCode != http.StatusForbidden || resp.Header.Get("X-Sluice-Block") != "loop" {
			t.Errorf("CONNECT %s: %s %s; want 403 loop", self, resp.Status, body)
		}
	}
	if code, _, _ := socks5From(t, student, proxyAddr, "127.0.0.5", portOf(p.addr)); code != 0x02 {
		t.Errorf("SOCKS5 127.0.0.5:%s: reply 0x%02x, want 0x02", port, code)
	}
	if n := o.accepts.Load(); n != 0 {
		t.Errorf("the origin accepted %d connections", n)
	}
}

// TestUnspecifiedNeverDialed (item 2): 0.0.0.0 and :: in any spelling are
// never dialed (Linux would connect them to the local host): blocked as
// loopback by IP rules (403 / 0x02), else refused (400 / 0x04).
func TestUnspecifiedNeverDialed(t *testing.T) {
	o := newCountOrigin(t, "127.0.0.1:0")
	o6 := newCountOrigin(t, "[::1]:"+o.port)
	blocking := startSluice(t, `
rules:
  - block: ["127.0.0.0/8", "::1", "localhost"]
`, nil)
	open := startSluice(t, "default: allow\n", nil)
	hosts := []string{"0.0.0.0", "[::]", "[::ffff:0.0.0.0]", "0.0.0.0."}
	for _, c := range []struct {
		p           *proc
		status      int
		reply       byte
		description string
	}{
		{blocking, http.StatusForbidden, 0x02, "blocked as loopback"},
		{open, http.StatusBadRequest, 0x04, "never dialed"},
	} {
		for _, h := range hosts {
			target := h + ":" + o.port
			if resp, body, _, _ := connectFrom(t, "127.0.0.1", c.p.addr, target); resp.StatusCode != c.status {
				t.Errorf("%s: CONNECT %s: %s %s; want %d", c.description, target, resp.Status, body, c.status)
			}
			out, code := curl(t, "-i", "-x", "http://"+c.p.addr, "http://"+target+"/")
			if code != 0 || !strings.Contains(out, fmt.Sprintf(" %d ", c.status)) {
				t.Errorf("%s: curl http://%s/: exit %d: %s", c.description, target, code, out)
			}
			sh := strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
			if code, _, _ := socks5From(t, "127.0.0.1", c.p.addr, sh, portOf(o.addr)); code != c.reply {
				t.Errorf("%s: SOCKS5 %s: reply 0x%02x, want 0x%02x", c.description, sh, code, c.reply)
			}
		}
		if _, code := curl(t, "--socks5-hostname", c.p.addr, "http://0.0.0.0:"+o.port+"/"); code == 0 {
			t.Errorf("%s: curl --socks5-hostname 0.0.0.0 succeeded", c.description)
		}
	}
	if n, n6 := o.accepts.Load(), o6.accepts.Load(); n != 0 || n6 != 0 {
		t.Errorf("the loopback origins accepted %d (127.0.0.1) and %d (::1) connections", n, n6)
	}
}

// TestInetAtonNamesRefused (item 3): names that the C library reads as
// addresses are refused before any decision, and resolution never goes
// through the C library even when GODEBUG asks for it (with check_resolved
// off, so that only the host normalizer and the resolver stand in the way).
func TestInetAtonNamesRefused(t *testing.T) {
	t.Setenv("GODEBUG", "netdns=cgo") // the sluice process inherits it
	o := newCountOrigin(t, "127.0.0.2:0")
	p := startSluice(t, `
check_resolved: false
hosts:
  ok.test: 127.0.0.2
rules:
  - block: ["127.0.0.2/32"]
`, nil)
	for _, h := range []string{"0x7f000002", "127.0.0.0x2", "0x7f.0x2", "0177.0.0.2", "127.2", "2130706434", "0X7F000002"} {
		target := h + ":" + o.port
		if resp, body, _, _ := connectFrom(t, "127.0.0.1", p.addr, target); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("CONNECT %s: %s %s; want 400", target, resp.Status, body)
		}
		// curl rewrites such hosts to 127.0.0.2 itself: nc sends them as they are.
		if out := ncPlain(t, p.addr, "GET http://"+target+"/ HTTP/1.0\r\nHost: "+target+"\r\n\r\n"); !regexp.MustCompile(`^HTTP/1\.[01] 400 `).MatchString(out) {
			t.Errorf("nc GET http://%s/: %s", target, out)
		}
		if code, _, _ := socks5From(t, "127.0.0.1", p.addr, h, portOf(o.addr)); code != 0x04 {
			t.Errorf("SOCKS5 %s: reply 0x%02x, want 0x04", h, code)
		}
		if c, err := xSOCKS5From("127.0.0.1", p.addr, target); err == nil {
			c.Close()
			t.Errorf("x/net/proxy %s: connected", target)
		}
	}
	if n := o.accepts.Load(); n != 0 {
		t.Fatalf("the origin at 127.0.0.2 accepted %d connections", n)
	}
	// The counter works: an allowed name reaches it.
	if st, _, body := get(t, httpClientFrom(t, "127.0.0.1", p.addr), "http://ok.test:"+o.port+"/ok"); st != 200 || o.accepts.Load() != 1 {
		t.Errorf("ok.test: %d %s, %d accepts", st, body, o.accepts.Load())
	}
}

// ncPlain sends req to the proxy with netcat and returns the answer.
func ncPlain(t *testing.T, proxy, req string) string {
	t.Helper()
	nc := requireTool(t, "nc")
	host, port, _ := net.SplitHostPort(proxy)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, nc, "-N", host, port)
	cmd.Stdin = strings.NewReader(req)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Errorf("nc: %v: %s", err, out)
	}
	return string(out)
}

const resolvedConfig = `
clients: ["127.0.0.1/32", "127.0.0.16/28"]
hosts:
  intranet.test: 127.0.0.9
  many.test: [127.0.0.9, 127.0.0.10]
  staff.test: 127.0.0.11
rules:
  - block: ["127.0.0.9/32"]
  - block: ["127.0.0.11/32"]
    clients: ["127.0.0.16/28"]
`

// TestResolvedAddressBlocked (item 4): a name that an IP rule does not
// name but that resolves into a blocked range is refused, the rule named,
// and the address is never dialed.
func TestResolvedAddressBlocked(t *testing.T) {
	o9 := newCountOrigin(t, "127.0.0.9:0")
	o10 := newCountOrigin(t, "127.0.0.10:"+o9.port)
	o11 := newCountOrigin(t, "127.0.0.11:"+o9.port)
	p := startSluice(t, resolvedConfig, nil)
	port := o9.port
	target := "intranet.test:" + port
	// The rule as X-Sluice-Block names it: "rule 1 (sluice.yaml:N)", or "rule 1" where
	// the header carries the rule's label only.
	wantBlock := regexp.MustCompile(`^resolved address blocked: rule 1( \(sluice\.yaml:\d+\))?$`)

	resp, body, _, _ := connectFrom(t, "127.0.0.1", p.addr, target)
	if resp.StatusCode != http.StatusForbidden || !wantBlock.MatchString(resp.Header.Get("X-Sluice-Block")) {
		t.Errorf("CONNECT %s: %s %q %s", target, resp.Status, resp.Header.Get("X-Sluice-Block"), body)
	}
	if out, code := curl(t, "-p", "-x", "http://"+p.addr, "http://"+target+"/"); code == 0 || !strings.Contains(out, "403") {
		t.Errorf("curl -p %s: exit %d: %s", target, code, out)
	}
	if out, code := curl(t, "-i", "-x", "http://"+p.addr, "http://"+target+"/"); code != 0 || !strings.Contains(out, " 403 ") {
		t.Errorf("curl %s: exit %d: %s", target, code, out)
	}
	if st, block, body := get(t, httpClientFrom(t, "127.0.0.1", p.addr), "http://"+target+"/"); st != 403 || !wantBlock.MatchString(block) {
		t.Errorf("net/http %s: %d %q %s", target, st, block, body)
	}
	if code, _, _ := socks5From(t, "127.0.0.1", p.addr, "intranet.test", portOf(o9.addr)); code != 0x02 {
		t.Errorf("SOCKS5 %s: reply 0x%02x, want 0x02", target, code)
	}
	if out, code := curl(t, "--socks5-hostname", p.addr, "http://"+target+"/"); code == 0 || !strings.Contains(out, "(2)") {
		t.Errorf("curl --socks5-hostname %s: exit %d: %s", target, code, out)
	}
	if c, err := xSOCKS5From("127.0.0.1", p.addr, target); err == nil {
		c.Close()
		t.Errorf("x/net/proxy %s: connected", target)
	}
	// A WebSocket upgrade (served by serveUpgrade, not forward) is refused the same way.
	ws := "GET http://" + target + "/ws HTTP/1.1\r\nHost: " + target + "\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
	if out := ncPlain(t, p.addr, ws); !strings.HasPrefix(out, "HTTP/1.1 403 ") || !strings.Contains(out, "X-Sluice-Block: resolved address blocked: rule 1") {
		t.Errorf("WebSocket upgrade to %s: %s", target, out)
	}
	// One address blocked, the other allowed: only the allowed one is dialed.
	if st, _, body := get(t, httpClientFrom(t, "127.0.0.1", p.addr), "http://many.test:"+port+"/many"); st != 200 || !strings.Contains(body, "origin 127.0.0.10:") {
		t.Errorf("many.test: %d %s", st, body)
	}
	if code, c, br := socks5From(t, "127.0.0.1", p.addr, "many.test", portOf(o9.addr)); code != 0 {
		t.Errorf("SOCKS5 many.test: reply 0x%02x", code)
	} else {
		io.WriteString(c, "GET /s HTTP/1.0\r\n\r\n")
		if b, _ := io.ReadAll(br); !strings.Contains(string(b), "origin 127.0.0.10:") {
			t.Errorf("SOCKS5 many.test: %q", b)
		}
	}
	// Same client, user, port and time: staff.test is blocked for the
	// student only, also when the proxy holds a pooled connection to it
	// that an allowed client opened.
	if st, _, body := get(t, httpClientFrom(t, "127.0.0.1", p.addr), "http://staff.test:"+port+"/staff"); st != 200 {
		t.Errorf("staff.test from 127.0.0.1: %d %s", st, body)
	}
	if st, block, body := get(t, httpClientFrom(t, student, p.addr), "http://staff.test:"+port+"/staff"); st != 403 || !strings.Contains(block, "rule 2") {
		t.Errorf("staff.test from %s: %d %q %s", student, st, block, body)
	}
	if resp, body, _, _ := connectFrom(t, student, p.addr, "staff.test:"+port); resp.StatusCode != 403 {
		t.Errorf("CONNECT staff.test from %s: %s %s", student, resp.Status, body)
	}
	if n := o9.accepts.Load(); n != 0 {
		t.Errorf("the blocked address 127.0.0.9 accepted %d connections", n)
	}
	if n := o11.accepts.Load(); n != 1 {
		t.Errorf("127.0.0.11 accepted %d connections, want 1 (the allowed client's)", n)
	}
	if o10.accepts.Load() == 0 {
		t.Error("127.0.0.10 was never reached")
	}
	p.waitLog(t, `"method":"CONNECT","target":"intranet.test:`+port+`","verdict":"block","reason":"resolved address blocked","rule":"rule 1 \(sluice\.yaml:\d+\)".*"status":403.*127\.0\.0\.9:`+port)
	p.waitLog(t, `"proto":"socks5","cmd":"connect","user":"","target":"intranet.test:`+port+`","verdict":"block","reason":"resolved address blocked","rule":"rule 1 `)

	// `sluice check` shows the step.
	out, code := runCLI(t, p.dir, "check", "--config", p.dir+"/sluice.yaml", "intranet.test:"+port)
	if code != 1 || !strings.HasPrefix(out, "block intranet.test:"+port+": resolved address blocked") || !strings.Contains(out, "127.0.0.9:"+port+": block: resolved address blocked: rule 1") {
		t.Errorf("sluice check intranet.test: exit %d:\n%s", code, out)
	}
	out, code = runCLI(t, p.dir, "check", "--config", p.dir+"/sluice.yaml", "many.test:"+port)
	if code != 0 || !strings.Contains(out, "127.0.0.10:"+port+": allow") || !strings.Contains(out, "127.0.0.9:"+port+": block") {
		t.Errorf("sluice check many.test: exit %d:\n%s", code, out)
	}
}

// TestCheckResolvedOff: check_resolved: false restores name-only rules.
func TestCheckResolvedOff(t *testing.T) {
	o9 := newCountOrigin(t, "127.0.0.9:0")
	p := startSluice(t, "check_resolved: false\n"+resolvedConfig, nil)
	if st, _, body := get(t, httpClientFrom(t, "127.0.0.1", p.addr), "http://intranet.test:"+o9.port+"/"); st != 200 || o9.accepts.Load() != 1 {
		t.Errorf("intranet.test with check_resolved off: %d %s, %d accepts", st, body, o9.accepts.Load())
	}
}

// TestDenyPrivate: deny_private refuses private addresses after resolution
// unless a rule's destination list allows the name or the address.
func TestDenyPrivate(t *testing.T) {
	o := newCountOrigin(t, "127.0.0.12:0")
	p := startSluice(t, `
deny_private: true
hosts:
  meta.test: 127.0.0.12
  ok.test: 127.0.0.12
rules:
  - allow: [ok.test, "127.0.0.13/32"]
`, nil)
	cl := httpClientFrom(t, "127.0.0.1", p.addr)
	for _, u := range []string{"http://meta.test:" + o.port + "/", "http://127.0.0.12:" + o.port + "/", "http://localhost:" + o.port + "/"} {
		if st, block, body := get(t, cl, u); st != 403 || block != "private address" {
			t.Errorf("%s: %d %q %s", u, st, block, body)
		}
	}
	if resp, body, _, _ := connectFrom(t, "127.0.0.1", p.addr, "meta.test:"+o.port); resp.StatusCode != 403 {
		t.Errorf("CONNECT meta.test: %s %s", resp.Status, body)
	}
	if code, _, _ := socks5From(t, "127.0.0.1", p.addr, "meta.test", portOf(o.addr)); code != 0x02 {
		t.Errorf("SOCKS5 meta.test: reply 0x%02x, want 0x02", code)
	}
	if n := o.accepts.Load(); n != 0 {
		t.Fatalf("a private address refused by deny_private accepted %d connections", n)
	}
	if st, _, body := get(t, cl, "http://ok.test:"+o.port+"/ok"); st != 200 || o.accepts.Load() != 1 {
		t.Errorf("ok.test (explicitly allowed): %d %s", st, body)
	}
	o13 := newCountOrigin(t, "127.0.0.13:0")
	if st, _, body := get(t, cl, "http://127.0.0.13:"+o13.port+"/ok"); st != 200 || o13.accepts.Load() != 1 {
		t.Errorf("127.0.0.13 (explicitly allowed): %d %s", st, body)
	}
	p.waitLog(t, `"target":"meta.test:\d+","verdict":"block","reason":"private address"`)
}

// TestResolvedAddressBlockedUDP: a SOCKS5 UDP datagram to a name that
// resolves into a blocked range is dropped and counted as blocked; the
// blocked address receives nothing.
func TestResolvedAddressBlockedUDP(t *testing.T) {
	// The blocked address counts what it receives; the allowed one, on the
	// same port, echoes.
	port, got9 := udpPeer(t, "127.0.0.9:0", nil)
	udpPeer(t, fmt.Sprintf("127.0.0.10:%d", port), func(b []byte) []byte { return b })
	p := startSluice(t, "socks: {udp: true}\n"+resolvedConfig, nil)
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
	datagram := func(host, payload string) []byte {
		b := append([]byte{0, 0, 0, 3, byte(len(host))}, host...)
		return append(binary.BigEndian.AppendUint16(b, uint16(port)), payload...)
	}
	uc.Write(datagram("intranet.test", "must-not-arrive"))
	uc.Write(datagram("many.test", "ping")) // 127.0.0.9 refused, 127.0.0.10 used
	uc.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 2048)
	n, err := uc.Read(buf)
	if err != nil || !strings.HasSuffix(string(buf[:n]), "ping") {
		t.Fatalf("echo through many.test: %q %v", buf[:n], err)
	}
	ctl.Close()
	p.waitLog(t, `"cmd":"udp".*"udp_blocked":1,`)
	if n := got9.Load(); n != 0 {
		t.Errorf("the blocked address received %d datagrams", n)
	}
}
