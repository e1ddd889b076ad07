package test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	xproxy "golang.org/x/net/proxy"
)

// dohRules is the README's paste-ready rule against encrypted DNS; the
// test checks that the README holds it word for word.
const dohRules = `rules:
  - name: encrypted DNS
    block: [builtin:doh, use-application-dns.net]
`

// TestBuiltinDoH: with the README's rule, DoH resolvers are refused by
// name (curl https://dns.google/) and by address (CONNECT 8.8.8.8:443,
// SOCKS5 to 8.8.8.8 and to Google's IPv6 address), and the Firefox
// canary domain gets the block page. Every allowed request is routed to
// an upstream on loopback that counts its accepts, so a request that got
// past the filter would be seen there, and nothing ever leaves loopback:
// the accepts stay at zero for the blocked ones and rise for an allowed
// one. dns.google also points at a counting origin through hosts:.
func TestBuiltinDoH(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil || !strings.Contains(string(readme), dohRules) {
		t.Fatalf("README.md lacks the rule this test runs:\n%s", dohRules)
	}
	trap := newAcceptCounter(t)   // the upstream every allowed request goes to
	origin := newAcceptCounter(t) // what dns.google would reach if dialed
	p := startSluice(t, fmt.Sprintf(`hosts: {dns.google: 127.0.0.1}
upstreams: {trap: "http://127.0.0.1:%s"}
upstream: trap
`, trap.port)+dohRules, nil)
	proxyURL := "http://" + p.addr

	// By name, through CONNECT (curl's https through a proxy) and plain HTTP.
	out, code := curl(t, "-v", "-x", proxyURL, "https://dns.google:"+origin.port+"/dns-query")
	if code == 0 || !strings.Contains(out, "< HTTP/1.1 403") || !strings.Contains(out, "X-Sluice-Block: encrypted DNS") {
		t.Errorf("https://dns.google/: exit %d:\n%s", code, out)
	}
	out, _ = curl(t, "-i", "-x", proxyURL, "http://use-application-dns.net/")
	if !strings.HasPrefix(out, "HTTP/1.1 403") || !strings.Contains(out, "encrypted DNS") || !strings.Contains(out, "use-application-dns.net") {
		t.Errorf("canary domain:\n%s", out)
	}
	// By address: an IP-literal CONNECT, from curl and by hand.
	out, code = curl(t, "-v", "-p", "-x", proxyURL, "https://8.8.8.8/")
	if code == 0 || !strings.Contains(out, "< HTTP/1.1 403") {
		t.Errorf("curl CONNECT 8.8.8.8:443: exit %d:\n%s", code, out)
	}
	for _, target := range []string{"1.1.1.1:443", "[2606:4700:4700::1111]:443", "[::ffff:9.9.9.9]:853"} {
		c, err := net.Dial("tcp", p.addr)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		c.Close()
		if err != nil || resp.StatusCode != http.StatusForbidden || resp.Header.Get("X-Sluice-Block") != "encrypted DNS" {
			t.Errorf("CONNECT %s: %v %v", target, resp, err)
		}
	}
	// SOCKS5 with an address (x/net/proxy sends IP literals as such): reply 0x02.
	d, err := xproxy.SOCKS5("tcp", p.addr, nil, xproxy.Direct)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, target := range []string{"8.8.8.8:853", "[2001:4860:4860::8888]:443"} {
		c, err := d.(xproxy.ContextDialer).DialContext(ctx, "tcp", target)
		if err == nil {
			c.Close()
			t.Errorf("SOCKS5 %s: connected", target)
		} else if !strings.Contains(err.Error(), "not allowed by ruleset") {
			t.Errorf("SOCKS5 %s: %v, want reply 0x02", target, err)
		}
	}
	// The SOCKS access line has an id too, and names the list.
	p.waitLog(t, `"msg":"access","request_id":"[^"]+".*"proto":"socks5".*"target":"8.8.8.8:853".*"category":"builtin:doh"`)
	if n := trap.accepts.Load() + origin.accepts.Load(); n != 0 {
		t.Fatalf("blocked DoH requests were dialed %d times", n)
	}

	// An allowed address goes to the trap upstream: the counter works.
	c, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "CONNECT 192.0.2.10:443 HTTP/1.1\r\nHost: 192.0.2.10:443\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	c.Close()
	if err != nil || resp.StatusCode == http.StatusForbidden {
		t.Fatalf("allowed CONNECT: %v %v", resp, err)
	}
	// A CONNECT to an IP address is sniffed (sniff: ip): the 200 comes
	// before the dial, so the dial may still be under way here.
	for deadline := time.Now().Add(10 * time.Second); trap.accepts.Load() < 1 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if n := trap.accepts.Load(); n != 1 {
		t.Fatalf("the trap upstream saw %d connections, want 1 (the allowed request)", n)
	}

	// sluice check explains the match; sluice list shows the list.
	out, code = runCLI(t, p.dir, "check", "--config", "sluice.yaml", "8.8.8.8:443")
	if code != 1 || !strings.Contains(out, `rule 1 "encrypted DNS"`) || !strings.Contains(out, "category: builtin:doh") ||
		!strings.Contains(out, "builtin:doh:") || !strings.Contains(out, "entry 8.8.8.8") {
		t.Errorf("sluice check 8.8.8.8: exit %d:\n%s", code, out)
	}
	out, code = runCLI(t, p.dir, "list", "--config", "sluice.yaml")
	if code != 0 || !strings.Contains(out, "builtin:doh: ") || !strings.Contains(out, "built-in list builtin:doh") {
		t.Errorf("sluice list: exit %d:\n%s", code, out)
	}
	out, code = runCLI(t, p.dir, "list", "show", "builtin:doh", "--grep", "dns.google")
	if code != 0 || !strings.Contains(out, "dns.google\n") {
		t.Errorf("sluice list show builtin:doh: exit %d:\n%s", code, out)
	}
}
