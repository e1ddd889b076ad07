package test

// End-to-end tests of upstream chaining (issue 5): the real binary with
// `upstreams:`, `upstream:` and per-rule `via:`, in front of real squid,
// danted and microsocks on loopback, driven by the real curl and by raw
// clients.

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/sluiceproxy/sluice/proxy/dial/dialtest"
)

// assertNoSecrets fails when Sluice's log holds one of the upstream passwords.
func assertNoSecrets(t *testing.T, p *proc) {
	t.Helper()
	for _, pw := range []string{upPass, upBadPass} {
		if strings.Contains(p.Log(), pw) {
			t.Errorf("sluice's log contains an upstream password:\n%s", p.Log())
		}
	}
}

// wantEcho fails unless out (curl -i) is a 200 from the echo origin for host.
func wantEcho(t *testing.T, what, out string, code int, host string) {
	t.Helper()
	if code != 0 || !strings.HasPrefix(out, "HTTP/1.1 200") || !strings.Contains(out, "hello from echo host="+host) {
		t.Fatalf("%s: want 200 from the origin for %s; curl exit %d:\n%s", what, host, code, out)
	}
}

// TestUpstreamSquidParent: with `upstream: parent` every allowed request
// leaves through squid: plain HTTP in absolute form (squid's Via header
// reaches the origin, its access log has the URL) and CONNECT tunnels
// (its access log has the CONNECT). The name is one only squid resolves.
func TestUpstreamSquidParent(t *testing.T) {
	t.Parallel() // each test starts its own upstreams; squid takes 2 s to stop
	sq := dialtest.StartSquid(t, dialtest.SquidOptions{ID: "parent-sq", Names: []string{"leak.test"}})
	o := newEchoOrigin(t)
	tlsO := newOrigin(t, true)
	p := startSluice(t, fmt.Sprintf("default: allow\nupstreams:\n  parent: http://%s\nupstream: parent\n", sq.Addr), nil)
	proxyURL := "http://" + p.addr

	out, code := curl(t, "-i", "-x", proxyURL, "http://leak.test:"+o.port+"/plain")
	wantEcho(t, "plain HTTP", out, code, "leak.test:"+o.port)
	if via := echoHeader(out, "Via"); !strings.Contains(via, "parent-sq") {
		t.Errorf("the origin saw Via %q, want squid's (parent-sq):\n%s", via, out)
	}
	sq.WaitLog(t, `GET http://leak.test:`+o.port+`/plain`, 1)

	out, code = curl(t, "-k", "-p", "-x", proxyURL, "https://leak.test:"+tlsO.port+"/tunnel")
	if code != 0 || !strings.Contains(out, "hello from origin host=leak.test") {
		t.Fatalf("CONNECT through squid: curl exit %d:\n%s", code, out)
	}
	sq.WaitLog(t, `CONNECT leak.test:`+tlsO.port, 1)
	p.waitLog(t, `"msg":"access".*"route":"parent"`)
}

// TestUpstreamSquidAuth: credentials in the upstream URL are sent as Basic
// Proxy-Authorization to squid with basic_ncsa_auth; a wrong password gives
// the client a 502 that names the upstream, and neither password ever
// appears in Sluice's log.
func TestUpstreamSquidAuth(t *testing.T) {
	t.Parallel() // each test starts its own upstreams; squid takes 2 s to stop
	sq := dialtest.StartSquid(t, dialtest.SquidOptions{ID: "auth-sq", Names: []string{"good.test", "bad.test"}, User: upUser, Pass: upPass})
	o := newEchoOrigin(t)
	tlsO := newOrigin(t, true)
	cfg := fmt.Sprintf(`default: block
upstreams:
  corp: http://%[1]s:%[2]s@%[4]s
  corpwrong: http://%[1]s:%[3]s@%[4]s
rules:
  - allow: [good.test]
    via: corp
  - allow: [bad.test]
    via: corpwrong
`, upUser, upPass, upBadPass, sq.Addr)
	p := startSluice(t, cfg, nil)
	proxyURL := "http://" + p.addr

	out, code := curl(t, "-i", "-x", proxyURL, "http://good.test:"+o.port+"/ok")
	wantEcho(t, "plain HTTP with credentials", out, code, "good.test:"+o.port)
	if h := echoHeader(out, "Proxy-Authorization"); h != "" {
		t.Errorf("the origin received Proxy-Authorization %q", h)
	}
	out, code = curl(t, "-k", "-p", "-x", proxyURL, "https://good.test:"+tlsO.port+"/ok")
	if code != 0 || !strings.Contains(out, "hello from origin host=good.test") {
		t.Fatalf("CONNECT with credentials: curl exit %d:\n%s", code, out)
	}
	sq.WaitLog(t, `CONNECT good.test:`+tlsO.port+` `+upUser, 1)
	sq.WaitLog(t, `GET http://good.test:`+o.port+`/ok `+upUser, 1)

	// The wrong password: plain HTTP and CONNECT both end in a 502 naming
	// the upstream, and nothing reaches the origin.
	before := o.hits.Load()
	out, _ = curl(t, "-i", "-x", proxyURL, "http://bad.test:"+o.port+"/no")
	if !strings.HasPrefix(out, "HTTP/1.1 502") || !strings.Contains(out, "corpwrong") {
		t.Errorf("plain HTTP with a wrong upstream password: want a 502 naming corpwrong, got:\n%s", out)
	}
	_, _, resp := rawConnect(t, p.addr, "bad.test:"+tlsO.port)
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 8192))
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(string(body), "corpwrong") {
		t.Errorf("CONNECT with a wrong upstream password: want a 502 naming corpwrong, got %s:\n%s", resp.Status, body)
	}
	for _, s := range []string{out, string(body)} {
		if strings.Contains(s, upPass) || strings.Contains(s, upBadPass) {
			t.Errorf("an answer to the client contains an upstream password:\n%s", s)
		}
	}
	if o.hits.Load() != before {
		t.Errorf("a request refused by the upstream reached the origin")
	}
	if !strings.Contains(string(body), "auth") {
		t.Errorf("the 502 does not say the upstream refused the credentials:\n%s", body)
	}
	p.waitLog(t, `"route":"corpwrong".*upstream auth failed`)
	assertNoSecrets(t, p)
}

// TestUpstreamNoDNSLeak: when the first hop is an upstream Sluice resolves
// no destination name. leak.test is in neither Sluice's `hosts:` nor
// /etc/hosts; only squid, the last hop of the chain danted -> squid, knows
// it. Every front end reaches it; Sluice's log names the route and holds no
// DNS failure. A lone socks5h danted route carries traffic too.
func TestUpstreamNoDNSLeak(t *testing.T) {
	t.Parallel() // each test starts its own upstreams; squid takes 2 s to stop
	if b, err := os.ReadFile("/etc/hosts"); err == nil && strings.Contains(string(b), "leak.test") {
		t.Fatalf("/etc/hosts names leak.test; the test needs a name only the upstream resolves")
	}
	sq := dialtest.StartSquid(t, dialtest.SquidOptions{ID: "exit-sq", Names: []string{"leak.test"}})
	dn := dialtest.StartDante(t, false)
	o := newEchoOrigin(t)
	tlsO := newOrigin(t, true)
	cfg := fmt.Sprintf(`default: allow
hosts:
  other.test: 127.0.0.1
upstreams:
  socksonly: socks5h://%[1]s
  exit: [socks5h://%[1]s, http://%[2]s]
upstream: socksonly
rules:
  - allow: [leak.test]
    via: exit
`, dn.Addr, sq.Addr)
	p := startSluice(t, cfg, nil)
	proxyURL := "http://" + p.addr

	// The chain danted -> squid, from each front end.
	out, code := curl(t, "-i", "-x", proxyURL, "http://leak.test:"+o.port+"/plain")
	wantEcho(t, "plain HTTP through danted -> squid", out, code, "leak.test:"+o.port)
	if via := echoHeader(out, "Via"); !strings.Contains(via, "exit-sq") {
		t.Errorf("the origin saw Via %q, want squid's (exit-sq)", via)
	}
	for _, args := range [][]string{
		{"-k", "-p", "-x", proxyURL, "https://leak.test:" + tlsO.port + "/connect"},
		{"-k", "--socks5-hostname", p.addr, "https://leak.test:" + tlsO.port + "/socks"},
	} {
		out, code := curl(t, args...)
		if code != 0 || !strings.Contains(out, "hello from origin host=leak.test") {
			t.Fatalf("curl %v: exit %d:\n%s", args, code, out)
		}
	}
	sq.WaitLog(t, `GET http://leak.test:`+o.port+`/plain`, 1)
	sq.WaitLog(t, `CONNECT leak.test:`+tlsO.port, 2)
	dn.WaitLog(t, `127\.0\.0\.1\.`+sq.Port()+`\b`, 3) // every chained request crossed danted to squid

	// danted alone, from both front ends.
	out, code = curl(t, "-i", "-x", proxyURL, "http://127.0.0.1:"+o.port+"/socks-route")
	wantEcho(t, "plain HTTP through danted", out, code, "127.0.0.1:"+o.port)
	out, code = curl(t, "-i", "--socks5-hostname", p.addr, "http://127.0.0.1:"+o.port+"/socks-front")
	wantEcho(t, "SOCKS5 front end through danted", out, code, "127.0.0.1:"+o.port)
	dn.WaitLog(t, `127\.0\.0\.1\.`+o.port+`\b`, 2)
	if via := echoHeader(out, "Via"); via != "" {
		t.Errorf("the route through danted added Via %q", via)
	}

	p.waitLog(t, `"route":"exit"`)
	p.waitLog(t, `"route":"socksonly"`)
	log := p.Log()
	for _, bad := range []string{"no such host", `: dns`, "lookup leak.test"} {
		if strings.Contains(log, bad) {
			t.Errorf("sluice's log shows a local lookup (%q):\n%s", bad, log)
		}
	}
}

// TestChainSquidThenDante: a two-hop chain [http://squid, socks5://danted]
// end to end: squid tunnels to danted, danted connects to the origin, for
// plain HTTP, CONNECT and the SOCKS5 front end.
func TestChainSquidThenDante(t *testing.T) {
	t.Parallel() // each test starts its own upstreams; squid takes 2 s to stop
	sq := dialtest.StartSquid(t, dialtest.SquidOptions{ID: "hop1-sq"})
	dn := dialtest.StartDante(t, false)
	o := newEchoOrigin(t)
	tlsO := newOrigin(t, true)
	cfg := fmt.Sprintf("default: allow\nupstreams:\n  twohop: [http://%s, socks5://%s]\nupstream: twohop\n", sq.Addr, dn.Addr)
	p := startSluice(t, cfg, nil)
	proxyURL := "http://" + p.addr

	out, code := curl(t, "-i", "-x", proxyURL, "http://127.0.0.1:"+o.port+"/plain")
	wantEcho(t, "plain HTTP through squid -> danted", out, code, "127.0.0.1:"+o.port)
	if via := echoHeader(out, "Via"); via != "" {
		t.Errorf("plain HTTP went through squid as a tunnel, yet the origin saw Via %q", via)
	}
	for _, args := range [][]string{
		{"-k", "-p", "-x", proxyURL, "https://127.0.0.1:" + tlsO.port + "/connect"},
		{"-k", "--socks5-hostname", p.addr, "https://127.0.0.1:" + tlsO.port + "/socks"},
	} {
		out, code := curl(t, args...)
		if code != 0 || !strings.Contains(out, "hello from origin host=127.0.0.1") {
			t.Fatalf("curl %v: exit %d:\n%s", args, code, out)
		}
	}
	// squid logs a tunnel when it ends: the two CONNECTs have; the plain
	// request's tunnel may still sit in Sluice's pool, and danted's log
	// (written at connect) shows it instead.
	sq.WaitLog(t, `CONNECT 127\.0\.0\.1:`+dn.Port()+` `, 2)
	dn.WaitLog(t, `127\.0\.0\.1\.`+o.port+`\b`, 1)
	dn.WaitLog(t, `127\.0\.0\.1\.`+tlsO.port+`\b`, 2)
	p.waitLog(t, `"route":"twohop"`)
}

// TestRoutePerRule: two rules route through two different squids and a
// third goes direct, although the default route is an upstream. Each
// request is seen by its own upstream only (squid's Via for plain HTTP,
// the access logs for tunnels), and the direct one by none.
func TestRoutePerRule(t *testing.T) {
	t.Parallel() // each test starts its own upstreams; squid takes 2 s to stop
	names := []string{"a.route.test", "b.route.test", "c.route.test"}
	sqA := dialtest.StartSquid(t, dialtest.SquidOptions{ID: "sq-a", Names: names})
	sqB := dialtest.StartSquid(t, dialtest.SquidOptions{ID: "sq-b", Names: names})
	o := newEchoOrigin(t)
	tlsO := newOrigin(t, true)
	cfg := fmt.Sprintf(`default: block
hosts:
  c.route.test: 127.0.0.1
upstreams:
  a: http://%s
  b: http://%s
upstream: b
rules:
  - allow: [a.route.test]
    via: a
  - allow: [b.route.test]
    via: b
  - allow: [c.route.test]
    via: direct
`, sqA.Addr, sqB.Addr)
	p := startSluice(t, cfg, nil)
	proxyURL := "http://" + p.addr

	cases := []struct {
		host, via string
		seen      *dialtest.Proc // nil: direct
	}{
		{"a.route.test", "sq-a", sqA},
		{"b.route.test", "sq-b", sqB},
		{"c.route.test", "", nil},
	}
	for _, c := range cases {
		for range 2 { // the second request may reuse a pooled connection: it must stay on its route
			out, code := curl(t, "-i", "-x", proxyURL, "http://"+c.host+":"+o.port+"/r")
			wantEcho(t, c.host, out, code, c.host+":"+o.port)
			via := echoHeader(out, "Via")
			if c.via == "" && via != "" || c.via != "" && !strings.Contains(via, c.via) || strings.Count(via, "sq-") > 1 {
				t.Errorf("%s: origin saw Via %q, want %q", c.host, via, c.via)
			}
		}
		out, code := curl(t, "-k", "-p", "-x", proxyURL, "https://"+c.host+":"+tlsO.port+"/t")
		if code != 0 || !strings.Contains(out, "hello from origin host="+c.host) {
			t.Fatalf("CONNECT %s: curl exit %d:\n%s", c.host, code, out)
		}
	}
	sqA.WaitLog(t, `CONNECT a\.route\.test:`, 1)
	sqB.WaitLog(t, `CONNECT b\.route\.test:`, 1)
	sqA.WaitLog(t, `GET http://a\.route\.test:`, 2)
	sqB.WaitLog(t, `GET http://b\.route\.test:`, 2)
	for _, u := range []*dialtest.Proc{sqA, sqB} {
		other := "b"
		if u == sqB {
			other = "a"
		}
		if n := u.Count(other + `\.route\.test|c\.route\.test`); n != 0 {
			t.Errorf("%s saw %d requests of other routes:\n%s", u.Name, n, u.Log())
		}
	}
	for _, route := range []string{"a", "b", "direct"} {
		p.waitLog(t, `"route":"`+route+`"`)
	}
}

// TestFailover: `pool: {failover: [dead, alive]}` with dead a closed
// loopback port: every request succeeds through alive. A failover list
// whose members are all dead answers 502 naming it.
func TestFailover(t *testing.T) {
	t.Parallel() // each test starts its own upstreams; squid takes 2 s to stop
	sq := dialtest.StartSquid(t, dialtest.SquidOptions{ID: "alive-sq", Names: []string{"leak.test", "gone.test"}})
	o := newEchoOrigin(t)
	tlsO := newOrigin(t, true)
	cfg := fmt.Sprintf(`default: allow
upstreams:
  dead: http://%s
  dead2: socks5://%s
  alive: http://%s
  pool: {failover: [dead, alive]}
  gone: {failover: [dead2, dead]}
upstream: pool
rules:
  - allow: [gone.test]
    via: gone
`, dialtest.FreeAddr(t), dialtest.FreeAddr(t), sq.Addr)
	p := startSluice(t, cfg, nil)
	proxyURL := "http://" + p.addr
	for i := range 3 {
		out, code := curl(t, "-i", "-x", proxyURL, fmt.Sprintf("http://leak.test:%s/f%d", o.port, i))
		wantEcho(t, "plain HTTP on the failover route", out, code, "leak.test:"+o.port)
		out, code = curl(t, "-k", "-p", "-x", proxyURL, "https://leak.test:"+tlsO.port+"/t")
		if code != 0 || !strings.Contains(out, "hello from origin host=leak.test") {
			t.Fatalf("CONNECT on the failover route: curl exit %d:\n%s", code, out)
		}
	}
	sq.WaitLog(t, `CONNECT leak\.test:`+tlsO.port, 3)

	before := o.hits.Load()
	out, _ := curl(t, "-i", "-x", proxyURL, "http://gone.test:"+o.port+"/x")
	if !strings.HasPrefix(out, "HTTP/1.1 502") || !strings.Contains(out, "gone") {
		t.Errorf("every member down: want a 502 naming the route, got:\n%s", out)
	}
	if o.hits.Load() != before {
		t.Errorf("a request on a dead route reached the origin")
	}
	if n := sq.Count(`gone\.test`); n != 0 {
		t.Errorf("a route without squid reached squid:\n%s", sq.Log())
	}
}

// identifying is what a client may send that tells who it is; anonymize
// strips it.
var identifying = map[string]string{
	"X-Forwarded-For": "203.0.113.7",
	"X-Real-Ip":       "203.0.113.8",
	"From":            "me@example.org",
	"Via":             "1.1 client-cache",
	"Forwarded":       "for=203.0.113.9",
}

// TestAnonymize: Sluice adds no Via, X-Forwarded-For or Forwarded of its
// own; the client's own identifying headers pass unless the route, or the
// whole config, says `anonymize: true`.
func TestAnonymize(t *testing.T) {
	t.Parallel() // each test starts its own upstreams; squid takes 2 s to stop
	ms := dialtest.StartMicrosocks(t, upUser, upPass)
	oAnon, oPlain, oDirect := newEchoOrigin(t), newEchoOrigin(t), newEchoOrigin(t)
	cfg := fmt.Sprintf(`default: allow
upstreams:
  anon: {chain: [socks5://%[1]s:%[2]s@%[3]s], anonymize: true}
  plain: socks5://%[1]s:%[2]s@%[3]s
rules:
  - allow: [127.0.0.1]
    ports: [%[4]s]
    via: anon
  - allow: [127.0.0.1]
    ports: [%[5]s]
    via: plain
`, upUser, upPass, ms.Addr, oAnon.port, oPlain.port)
	p := startSluice(t, cfg, nil)
	pAll := startSluice(t, "default: allow\nanonymize: true\n", nil)

	var hdrArgs []string
	for k, v := range identifying {
		hdrArgs = append(hdrArgs, "-H", k+": "+v)
	}
	cases := []struct {
		name     string
		proxy    *proc
		o        *echoOrigin
		stripped bool
	}{
		{"route anonymize: true", p, oAnon, true},
		{"route without anonymize", p, oPlain, false},
		{"direct without anonymize", p, oDirect, false},
		{"global anonymize: true", pAll, oDirect, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			url := "http://127.0.0.1:" + c.o.port + "/a"
			// Sluice itself adds nothing.
			out, code := curl(t, "-i", "-x", "http://"+c.proxy.addr, url)
			wantEcho(t, "bare request", out, code, "127.0.0.1:"+c.o.port)
			for _, h := range []string{"Via", "X-Forwarded-For", "Forwarded", "X-Real-Ip", "Proxy-Authorization", "Proxy-Connection"} {
				if v := echoHeader(out, h); v != "" {
					t.Errorf("sluice added %s: %s", h, v)
				}
			}
			out, code = curl(t, append([]string{"-i", "-x", "http://" + c.proxy.addr, url}, hdrArgs...)...)
			wantEcho(t, "request with identifying headers", out, code, "127.0.0.1:"+c.o.port)
			for h, v := range identifying {
				got := echoHeader(out, h)
				if c.stripped && got != "" {
					t.Errorf("%s reached the origin: %q", h, got)
				}
				if !c.stripped && got != v {
					t.Errorf("%s: origin saw %q, want the client's %q", h, got, v)
				}
			}
			if ua := echoHeader(out, "User-Agent"); !strings.HasPrefix(ua, "curl/") {
				t.Errorf("anonymize touched an ordinary header: User-Agent %q", ua)
			}
		})
	}
	p.waitLog(t, `"route":"anon"`)
	assertNoSecrets(t, p)
}

// TestBannerThroughUpstreams: an origin that speaks first, reached through
// Sluice over each kind of route and each front end. The client reads the
// banner before it sends a byte, so a banner lost behind an upstream's
// CONNECT answer or SOCKS reply hangs or fails the test; then a line is
// echoed and a half-close is answered.
func TestBannerThroughUpstreams(t *testing.T) {
	t.Parallel() // each test starts its own upstreams; squid takes 2 s to stop
	sq := dialtest.StartSquid(t, dialtest.SquidOptions{ID: "banner-sq"})
	sqTLS := dialtest.StartSquid(t, dialtest.SquidOptions{ID: "banner-sqtls", TLS: true})
	dn := dialtest.StartDante(t, false)
	ms := dialtest.StartMicrosocks(t, upUser, upPass)
	// halfClose is false where the upstream itself ends a tunnel at the
	// client's EOF: squid and microsocks do, with or without Sluice.
	kinds := []struct {
		route, upstream string
		halfClose       bool
	}{
		{"direct", "", true},
		{"http", "http://" + sq.Addr, false},
		{"https", fmt.Sprintf("{chain: [https://%s], tls_ca: %s}", sqTLS.Addr, sqTLS.CA), false},
		{"socks5", "socks5://" + dn.Addr, true},
		{"socks4a", "socks4a://" + dn.Addr, true},
		{"socks5h", fmt.Sprintf("socks5h://%s:%s@%s", upUser, upPass, ms.Addr), false},
	}
	var cfg strings.Builder
	cfg.WriteString("default: block\nupstreams:\n")
	for _, k := range kinds {
		if k.upstream != "" {
			fmt.Fprintf(&cfg, "  %s: %s\n", k.route, k.upstream)
		}
	}
	cfg.WriteString("rules:\n")
	origins := make([]*dialtest.Server, len(kinds))
	for i, k := range kinds {
		origins[i] = dialtest.StartOrigin(t, "220 banner via "+k.route+"\r\n")
		fmt.Fprintf(&cfg, "  - allow: [127.0.0.1]\n    ports: [%s]\n    via: %s\n", origins[i].Port(), k.route)
	}
	p := startSluice(t, cfg.String(), nil)
	for i, k := range kinds {
		banner := "220 banner via " + k.route + "\r\n"
		t.Run(k.route+"/http", func(t *testing.T) {
			c, br := httpConnect(t, p.addr, "127.0.0.1:"+origins[i].Port())
			if msg := talkBanner(c, br, banner, k.halfClose); msg != "" {
				t.Error(msg)
			}
		})
		t.Run(k.route+"/socks5", func(t *testing.T) {
			c, br := socks5Connect(t, p.addr, "127.0.0.1", atoi(origins[i].Port()))
			if msg := talkBanner(c, br, banner, k.halfClose); msg != "" {
				t.Error(msg)
			}
		})
	}
	sq.WaitLog(t, `CONNECT 127\.0\.0\.1:`+origins[1].Port(), 2)
	sqTLS.WaitLog(t, `CONNECT 127\.0\.0\.1:`+origins[2].Port(), 2)
	dn.WaitLog(t, `127\.0\.0\.1\.(`+origins[3].Port()+`|`+origins[4].Port()+`)\b`, 4)
	assertNoSecrets(t, p)
}

// TestUpstreamCheckRoute: `sluice check` prints the route an allowed
// destination takes: the default upstream, a per-rule chain with its hops,
// a failover list, direct; passwords are redacted. Nothing is dialed.
func TestUpstreamCheckRoute(t *testing.T) {
	t.Parallel() // each test starts its own upstreams; squid takes 2 s to stop
	cfg := fmt.Sprintf(`default: allow
upstreams:
  parent: http://%[1]s:%[2]s@127.0.0.1:3128
  vpn: [https://127.0.0.1:8443, socks5://bob:%[3]s@127.0.0.1:1080]
  pool: {failover: [parent, vpn]}
upstream: parent
rules:
  - allow: [vpn.test]
    via: vpn
  - allow: [pool.test]
    via: pool
  - allow: [direct.test]
    via: direct
  - block: [blocked.test]
`, upUser, upPass, upBadPass)
	dir, path := writeConfig(t, cfg, nil)
	cases := []struct {
		target string
		code   int
		route  string // "": no route line
	}{
		{"leak.test", 0, "route: parent: http://alice:xxxxx@127.0.0.1:3128\n"},
		{"http://vpn.test/x", 0, "route: vpn: https://127.0.0.1:8443 -> socks5://bob:xxxxx@127.0.0.1:1080\n"},
		{"pool.test:8443", 0, "route: pool: failover parent, vpn\n"},
		{"direct.test", 0, "route: direct\n"},
		{"blocked.test", 1, ""},
	}
	for _, c := range cases {
		out, code := runCLI(t, dir, "check", "--config", path, c.target)
		if code != c.code {
			t.Errorf("check %s: exit %d, want %d:\n%s", c.target, code, c.code, out)
		}
		if c.route != "" && !strings.Contains(out, c.route) {
			t.Errorf("check %s: output lacks %q:\n%s", c.target, c.route, out)
		}
		if c.route == "" && strings.Contains(out, "route:") {
			t.Errorf("check %s: a blocked destination has a route:\n%s", c.target, out)
		}
		if strings.Contains(out, upPass) || strings.Contains(out, upBadPass) {
			t.Errorf("check %s prints a password:\n%s", c.target, out)
		}
	}
}
