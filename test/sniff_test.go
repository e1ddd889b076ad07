package test

import (
	"bufio"
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/cryptobyte"
	xproxy "golang.org/x/net/proxy"
)

// sniffOriginListener is a listener that counts the TCP connections it accepts
// (the proof that a blocked tunnel never reached the origin) and the bytes
// read from them.
type sniffOriginListener struct {
	net.Listener
	n     atomic.Int64
	bytes atomic.Int64
}

func (l *sniffOriginListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.n.Add(1)
	return &sniffOriginConn{Conn: c, n: &l.bytes}, nil
}

// sniffOriginConn counts the bytes read from a conn.
type sniffOriginConn struct {
	net.Conn
	n *atomic.Int64
}

func (c *sniffOriginConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// countedOrigin is an HTTP or HTTPS origin on 127.0.0.1 that counts accepts.
type countedOrigin struct {
	srv     *httptest.Server
	accepts *sniffOriginListener
	port    string
}

func newCountedOrigin(t *testing.T, useTLS bool) *countedOrigin {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o := &countedOrigin{accepts: &sniffOriginListener{Listener: ln}}
	o.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sni := ""
		if r.TLS != nil {
			sni = r.TLS.ServerName
		}
		fmt.Fprintf(w, "hello from origin host=%s sni=%s", r.Host, sni)
	}))
	o.srv.Listener.Close()
	o.srv.Listener = o.accepts
	if useTLS {
		o.srv.StartTLS()
	} else {
		o.srv.Start()
	}
	t.Cleanup(o.srv.Close)
	_, o.port, _ = net.SplitHostPort(ln.Addr().String())
	return o
}

// addr is the origin's IP-literal address.
func (o *countedOrigin) addr() string { return "127.0.0.1:" + o.port }

// waitAccess waits until an access line of p has every field of want (a
// value ending in "*" matches by prefix), or fails the test after 10 s.
func waitAccess(t *testing.T, p *proc, want map[string]string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, l := range strings.Split(p.Log(), "\n") {
			var m map[string]any
			if json.Unmarshal([]byte(l), &m) != nil || m["msg"] != "access" {
				continue
			}
			if accessHas(m, want) {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no access line with %v; log:\n%s", want, p.Log())
}

func accessHas(m map[string]any, want map[string]string) bool {
	for k, w := range want {
		v, ok := m[k]
		if !ok {
			return false
		}
		got := fmt.Sprint(v)
		if prefix, ok := strings.CutSuffix(w, "*"); ok {
			if !strings.HasPrefix(got, prefix) {
				return false
			}
		} else if got != w {
			return false
		}
	}
	return true
}

const sniffConfig = `
default: allow
hosts:
  allowed.test: 127.0.0.1
rules:
  - block: [blocked.test]
`

// splitWrites sends each write in two halves with a pause between them, so
// that a ClientHello reaches the proxy in two TCP segments.
type splitWrites struct{ net.Conn }

func (c splitWrites) Write(p []byte) (int, error) {
	if len(p) < 2 {
		return c.Conn.Write(p)
	}
	n, err := c.Conn.Write(p[:len(p)/2])
	if err != nil {
		return n, err
	}
	time.Sleep(50 * time.Millisecond)
	m, err := c.Conn.Write(p[len(p)/2:])
	return n + m, err
}

// connectTunnel opens a CONNECT tunnel to target through the HTTP proxy at
// proxyAddr and returns it after the 200.
func connectTunnel(t *testing.T, proxyAddr, target string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", proxyAddr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("CONNECT %s: %s", target, resp.Status)
	}
	if br.Buffered() != 0 {
		t.Fatal("bytes after the 200")
	}
	return c
}

// socks5Tunnel opens a SOCKS5 tunnel to target with golang.org/x/net/proxy.
func socks5Tunnel(t *testing.T, proxyAddr, target string) net.Conn {
	t.Helper()
	d, err := xproxy.SOCKS5("tcp", proxyAddr, nil, xproxy.Direct)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := d.(xproxy.ContextDialer).DialContext(ctx, "tcp", target)
	if err != nil {
		t.Fatalf("SOCKS5 CONNECT %s: %v", target, err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	return c
}

// httpsGet runs a TLS handshake with SNI name over c (writes split in two)
// and a GET; it returns the response body or the error.
func httpsGet(c net.Conn, name string) (string, error) {
	tc := tls.Client(splitWrites{c}, &tls.Config{ServerName: name, InsecureSkipVerify: true})
	if err := tc.Handshake(); err != nil {
		return "", err
	}
	fmt.Fprintf(tc, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", name)
	b, err := io.ReadAll(tc)
	return string(b), err
}

// TestSniffSOCKSCurl: curl resolves the name itself (--socks5, --socks4 with
// --resolve) and asks the proxy for 127.0.0.1; the SNI still names the host,
// and a blocked one never reaches the origin.
func TestSniffSOCKSCurl(t *testing.T) {
	o := newCountedOrigin(t, true)
	p := startSluice(t, sniffConfig, nil)
	for _, flag := range []string{"--socks5", "--socks4"} {
		t.Run(flag, func(t *testing.T) {
			before := o.accepts.n.Load()
			url := "https://blocked.test:" + o.port + "/"
			out, code := curl(t, "-k", flag, p.addr, "--resolve", "blocked.test:"+o.port+":127.0.0.1", url)
			if code == 0 {
				t.Fatalf("blocked.test passed: %s", out)
			}
			if n := o.accepts.n.Load() - before; n != 0 {
				t.Fatalf("origin accepted %d connections for a blocked SNI", n)
			}
			url = "https://allowed.test:" + o.port + "/"
			out, code = curl(t, "-k", flag, p.addr, "--resolve", "allowed.test:"+o.port+":127.0.0.1", url)
			if code != 0 || !strings.Contains(out, "hello from origin host=allowed.test:"+o.port+" sni=allowed.test") {
				t.Fatalf("allowed.test: exit %d: %s", code, out)
			}
		})
	}
	for _, proto := range []string{"socks5", "socks4"} {
		waitAccess(t, p, map[string]string{"proto": proto, "target": o.addr(), "verdict": "block", "reason": "sniffed",
			"rule": "rule 1 (sluice.yaml:*", "sniff": "tls", "sniffed": "blocked.test"})
		waitAccess(t, p, map[string]string{"proto": proto, "target": o.addr(), "verdict": "allow", "sniff": "tls", "sniffed": "allowed.test"})
	}
}

// TestSniffSplitClientHello: a crypto/tls ClientHello that reaches the
// proxy in two segments, through CONNECT and SOCKS5 to an IP literal.
func TestSniffSplitClientHello(t *testing.T) {
	o := newCountedOrigin(t, true)
	p := startSluice(t, sniffConfig, nil)
	tunnels := map[string]func(*testing.T, string, string) net.Conn{"connect": connectTunnel, "socks5": socks5Tunnel}
	for name, open := range tunnels {
		t.Run(name, func(t *testing.T) {
			before := o.accepts.n.Load()
			if body, err := httpsGet(open(t, p.addr, o.addr()), "blocked.test"); err == nil {
				t.Fatalf("blocked SNI got through: %q", body)
			}
			if n := o.accepts.n.Load() - before; n != 0 {
				t.Fatalf("origin accepted %d connections for a blocked SNI", n)
			}
			body, err := httpsGet(open(t, p.addr, o.addr()), "allowed.test")
			if err != nil || !strings.Contains(body, "sni=allowed.test") {
				t.Fatalf("allowed SNI: %v %q", err, body)
			}
		})
	}
	waitAccess(t, p, map[string]string{"proto": "http", "method": "CONNECT", "target": o.addr(), "verdict": "block", "reason": "sniffed",
		"sniff": "tls", "sniffed": "blocked.test"})
}

// TestSniffLateClientHello: a client that waits past the sniff's wait
// before its ClientHello is still sniffed: the origin has been connected
// to (a server might have spoken first) but receives no byte.
func TestSniffLateClientHello(t *testing.T) {
	o := newCountedOrigin(t, true)
	p := startSluice(t, sniffConfig, nil)
	c := socks5Tunnel(t, p.addr, o.addr())
	time.Sleep(1500 * time.Millisecond) // the wait is 1 s
	if body, err := httpsGet(c, "blocked.test"); err == nil {
		t.Fatalf("a late ClientHello for blocked.test got through: %q", body)
	}
	waitAccess(t, p, map[string]string{"target": o.addr(), "verdict": "block", "reason": "sniffed", "sniff": "tls", "sniffed": "blocked.test"})
	if n := o.accepts.bytes.Load(); n != 0 {
		t.Fatalf("origin read %d bytes of a blocked late ClientHello", n)
	}
	c = connectTunnel(t, p.addr, o.addr())
	time.Sleep(1500 * time.Millisecond)
	if body, err := httpsGet(c, "allowed.test"); err != nil || !strings.Contains(body, "sni=allowed.test") {
		t.Fatalf("a late ClientHello for allowed.test: %v %q", err, body)
	}
}

// TestSniffPlainHTTP: plain HTTP through a CONNECT to an IP literal is
// decided by its Host header; a blocked one is closed unanswered.
func TestSniffPlainHTTP(t *testing.T) {
	o := newCountedOrigin(t, false)
	p := startSluice(t, sniffConfig, nil)
	c := connectTunnel(t, p.addr, o.addr())
	io.WriteString(c, "GET /x HTTP/1.1\r\nHost: blocked.test\r\n\r\n")
	if b, err := io.ReadAll(c); len(b) != 0 {
		t.Fatalf("a blocked Host got an answer: %q (%v)", b, err)
	}
	if n := o.accepts.n.Load(); n != 0 {
		t.Fatalf("origin accepted %d connections for a blocked Host", n)
	}
	// Two different Host headers: no single name can be trusted.
	c = connectTunnel(t, p.addr, o.addr())
	io.WriteString(c, "GET /x HTTP/1.1\r\nHost: allowed.test\r\nHost: blocked.test\r\n\r\n")
	if b, _ := io.ReadAll(c); len(b) != 0 || o.accepts.n.Load() != 0 {
		t.Fatalf("two Host headers got through: %q", b)
	}
	c = connectTunnel(t, p.addr, o.addr())
	io.WriteString(c, "GET /x HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n")
	b, _ := io.ReadAll(c)
	if !strings.Contains(string(b), "hello from origin host=allowed.test sni=") {
		t.Fatalf("allowed Host: %q", b)
	}
	waitAccess(t, p, map[string]string{"target": o.addr(), "verdict": "block", "reason": "sniffed", "rule": "rule 1 *",
		"sniff": "http", "sniffed": "blocked.test"})
	waitAccess(t, p, map[string]string{"verdict": "block", "reason": "sniffed", "sniff": "http", "sniff_err": "sniff: ambiguous host*"})
}

// TestSniffDomainFronting: with sniff: all, a CONNECT to an allowed name
// whose ClientHello names a blocked one is blocked; with the default
// (sniff: ip) a named CONNECT is not sniffed.
func TestSniffDomainFronting(t *testing.T) {
	o := newCountedOrigin(t, true)
	target := "allowed.test:" + o.port
	p := startSluice(t, sniffConfig+"sniff: all\n", nil)
	if body, err := httpsGet(connectTunnel(t, p.addr, target), "blocked.test"); err == nil {
		t.Fatalf("fronted SNI got through: %q", body)
	}
	if body, err := httpsGet(socks5Tunnel(t, p.addr, target), "blocked.test"); err == nil {
		t.Fatalf("fronted SNI got through SOCKS5: %q", body)
	}
	if n := o.accepts.n.Load(); n != 0 {
		t.Fatalf("origin accepted %d connections for a fronted SNI", n)
	}
	if body, err := httpsGet(connectTunnel(t, p.addr, target), "allowed.test"); err != nil || !strings.Contains(body, "sni=allowed.test") {
		t.Fatalf("allowed SNI with sniff: all: %v %q", err, body)
	}
	for _, proto := range []string{"http", "socks5"} {
		waitAccess(t, p, map[string]string{"proto": proto, "target": target, "verdict": "block", "reason": "sniffed", "sniffed": "blocked.test"})
	}

	ip := startSluice(t, sniffConfig, nil)
	if body, err := httpsGet(connectTunnel(t, ip.addr, target), "blocked.test"); err != nil || !strings.Contains(body, "sni=blocked.test") {
		t.Fatalf("sniff: ip sniffed a named CONNECT: %v %q", err, body)
	}
}

// TestSniffOff: sniff: off keeps the decision on the IP literal.
func TestSniffOff(t *testing.T) {
	o := newCountedOrigin(t, true)
	p := startSluice(t, sniffConfig+"sniff: off\n", nil)
	url := "https://blocked.test:" + o.port + "/"
	out, code := curl(t, "-k", "--socks5", p.addr, "--resolve", "blocked.test:"+o.port+":127.0.0.1", url)
	if code != 0 || !strings.Contains(out, "sni=blocked.test") {
		t.Fatalf("sniff: off: exit %d: %s", code, out)
	}
	if strings.Contains(p.Log(), `"sniff"`) {
		t.Fatalf("sniff: off sniffed:\n%s", p.Log())
	}
}

// TestSniffUnnamed: TLS to an IP literal without SNI follows sniff_unnamed;
// plain HTTP without a name and a silent client (the server speaks first)
// stay decided on the IP.
func TestSniffUnnamed(t *testing.T) {
	o := newCountedOrigin(t, true)
	p := startSluice(t, sniffConfig+"sniff_unnamed: block\n", nil)
	if body, err := httpsGet(socks5Tunnel(t, p.addr, o.addr()), ""); err == nil {
		t.Fatalf("TLS without SNI got through with sniff_unnamed: block: %q", body)
	}
	if n := o.accepts.n.Load(); n != 0 {
		t.Fatalf("origin accepted %d connections for TLS without SNI", n)
	}
	waitAccess(t, p, map[string]string{"target": o.addr(), "verdict": "block", "reason": "sniffed", "sniff": "tls", "sniff_err": "sniff: no name"})

	// Encrypted Client Hello: the visible SNI is only the public name.
	ech := &tls.Config{ServerName: "hidden.test", MinVersion: tls.VersionTLS13, EncryptedClientHelloConfigList: echConfigList(t, "public.test")}
	if err := tls.Client(socks5Tunnel(t, p.addr, o.addr()), ech).Handshake(); err == nil {
		t.Fatal("an ECH handshake got through with sniff_unnamed: block")
	}
	if n := o.accepts.n.Load(); n != 0 {
		t.Fatalf("origin accepted %d connections for ECH", n)
	}
	waitAccess(t, p, map[string]string{"target": o.addr(), "verdict": "block", "reason": "sniffed", "sniff": "tls-ech", "sniffed": "public.test"})

	// A server that speaks first: the client sends nothing, the decision
	// stays on the IP, and the greeting arrives after the sniff's wait.
	greet, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer greet.Close()
	go func() {
		for {
			c, err := greet.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, "220 greetings\r\n")
			c.Close()
		}
	}()
	c := socks5Tunnel(t, p.addr, greet.Addr().String())
	if b, err := io.ReadAll(c); string(b) != "220 greetings\r\n" {
		t.Fatalf("server-first protocol: %q %v", b, err)
	}

	allow := startSluice(t, sniffConfig, nil) // sniff_unnamed: allow (default)
	if body, err := httpsGet(socks5Tunnel(t, allow.addr, o.addr()), ""); err != nil || !strings.Contains(body, "sni=") {
		t.Fatalf("TLS without SNI with the default sniff_unnamed: %v %q", err, body)
	}
	// ECH reaches the origin (which does not speak ECH, so the handshake fails there).
	before := o.accepts.n.Load()
	c = socks5Tunnel(t, allow.addr, o.addr())
	tls.Client(c, ech).Handshake()
	c.Close() // the access line is written when the tunnel ends
	if o.accepts.n.Load() != before+1 {
		t.Fatal("ECH with the default sniff_unnamed did not reach the origin")
	}
	waitAccess(t, allow, map[string]string{"target": o.addr(), "verdict": "allow", "sniff": "tls-ech", "sniffed": "public.test"})
}

// echConfigList returns an ECHConfigList (draft-ietf-tls-esni section 4)
// with one X25519 / HKDF-SHA256 / AES-128-GCM config for publicName: enough
// for a crypto/tls client to send an encrypted ClientHello.
func echConfigList(t *testing.T, publicName string) []byte {
	t.Helper()
	key, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var b cryptobyte.Builder
	b.AddUint16LengthPrefixed(func(list *cryptobyte.Builder) {
		list.AddUint16(0xfe0d) // version
		list.AddUint16LengthPrefixed(func(c *cryptobyte.Builder) {
			c.AddUint8(7)     // config_id
			c.AddUint16(0x20) // DHKEM(X25519, HKDF-SHA256)
			c.AddUint16LengthPrefixed(func(k *cryptobyte.Builder) { k.AddBytes(key.PublicKey().Bytes()) })
			c.AddUint16LengthPrefixed(func(s *cryptobyte.Builder) {
				s.AddUint16(1) // HKDF-SHA256
				s.AddUint16(1) // AES-128-GCM
			})
			c.AddUint8(0) // maximum_name_length
			c.AddUint8LengthPrefixed(func(n *cryptobyte.Builder) { n.AddBytes([]byte(publicName)) })
			c.AddUint16(0) // extensions
		})
	})
	return b.BytesOrPanic()
}

// TestSniffKeepsDenyPrivate: the dial-time guard judges the address the
// client asked for with its own request. An IP-literal target it refuses
// is refused before the success reply (403 / 0x02, as without sniffing);
// and with sniff: all, a ClientHello naming an explicitly allowed host
// does not lift deny_private for a name that resolves to a private address.
func TestSniffKeepsDenyPrivate(t *testing.T) {
	o := newCountedOrigin(t, true)
	p := startSluice(t, "deny_private: true\nsniff: all\nhosts: {meta.test: 127.0.0.1}\nrules:\n  - allow: [allowed.test]\n", nil)
	if resp, body, _, _ := connectFrom(t, "127.0.0.1", p.addr, o.addr()); resp.StatusCode != http.StatusForbidden {
		t.Errorf("CONNECT %s: %s %s; want 403 before any sniffing", o.addr(), resp.Status, body)
	}
	if code, _, _ := socks5From(t, "127.0.0.1", p.addr, "127.0.0.1", portOf(o.addr())); code != 0x02 {
		t.Errorf("SOCKS5 %s: reply 0x%02x, want 0x02", o.addr(), code)
	}
	target := "meta.test:" + o.port
	tunnels := map[string]func(*testing.T, string, string) net.Conn{"connect": connectTunnel, "socks5": socks5Tunnel}
	for name, open := range tunnels {
		if body, err := httpsGet(open(t, p.addr, target), "allowed.test"); err == nil {
			t.Fatalf("%s: an allowed SNI lifted deny_private: %q", name, body)
		}
	}
	if n := o.accepts.n.Load(); n != 0 {
		t.Fatalf("origin at a private address accepted %d connections", n)
	}
	for _, proto := range []string{"http", "socks5"} {
		waitAccess(t, p, map[string]string{"proto": proto, "target": o.addr(), "verdict": "block", "reason": "private address"})
		waitAccess(t, p, map[string]string{"proto": proto, "target": target, "verdict": "block", "reason": "private address", "sniffed": "allowed.test"})
	}
}
