package test

import (
	"context"
	"io"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	xproxy "golang.org/x/net/proxy"
)

// TestMixedPortSOCKS: the same port that serves HTTP serves SOCKS5 and
// SOCKS4a, to real curl, nc and x/net/proxy clients.
func TestMixedPortSOCKS(t *testing.T) {
	o := newOrigin(t, false)
	p := startCore(t)
	url := "http://allowed.test:" + o.port + "/s"
	for _, flag := range []string{"--socks5-hostname", "--socks4a"} {
		out, code := curl(t, flag, p.addr, url)
		if code != 0 || !strings.Contains(out, "hello from origin host=allowed.test") {
			t.Errorf("curl %s: exit %d: %s", flag, code, out)
		}
	}
	for _, flag := range []string{"--socks5", "--socks4"} { // curl resolves: use an IP
		out, code := curl(t, flag, p.addr, "http://127.0.0.1:"+o.port+"/ip")
		if code != 0 || !strings.Contains(out, "hello from origin") {
			t.Errorf("curl %s: exit %d: %s", flag, code, out)
		}
	}
	// Blocked by name: SOCKS5 reply 0x02, no request reaches the origin.
	before := o.hits.Load()
	out, code := curl(t, "--socks5-hostname", p.addr, "http://a.suffix.test:"+o.port+"/")
	if code == 0 || !strings.Contains(out, "SOCKS5 connection to a.suffix.test. (2)") { // reply 0x02
		t.Errorf("blocked SOCKS5: exit %d: %s", code, out)
	}
	if o.hits.Load() != before {
		t.Error("a blocked SOCKS request reached the origin")
	}
	// HTTP still works on the same port after SOCKS clients.
	if out, code := curl(t, "-x", "http://"+p.addr, url); code != 0 || !strings.Contains(out, "hello") {
		t.Errorf("HTTP after SOCKS: exit %d: %s", code, out)
	}

	// golang.org/x/net/proxy as a SOCKS5 client.
	d, err := xproxy.SOCKS5("tcp", p.addr, nil, xproxy.Direct)
	if err != nil {
		t.Fatal(err)
	}
	c, err := d.(xproxy.ContextDialer).DialContext(context.Background(), "tcp", "allowed.test:"+o.port)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "GET /xnet HTTP/1.0\r\nHost: allowed.test\r\n\r\n")
	b, _ := io.ReadAll(c)
	c.Close()
	if !strings.Contains(string(b), "path=/xnet") {
		t.Errorf("x/net/proxy: %q", b)
	}
}

// TestNetcat drives the binary with netcat-openbsd's -X 5 and -X connect.
func TestNetcat(t *testing.T) {
	nc := requireTool(t, "nc")
	o := newOrigin(t, false)
	p := startCore(t)
	for _, mode := range []string{"5", "connect"} {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		cmd := exec.CommandContext(ctx, nc, "-X", mode, "-x", p.addr, "-N", "allowed.test", o.port)
		cmd.Stdin = strings.NewReader("GET /nc HTTP/1.0\r\nHost: allowed.test\r\n\r\n")
		out, err := cmd.CombinedOutput()
		cancel()
		if err != nil || !strings.Contains(string(out), "path=/nc") {
			t.Errorf("nc -X %s: %v: %s", mode, err, out)
		}
	}
}

// TestProxyAuth: with users configured, every front end requires them.
func TestProxyAuth(t *testing.T) {
	o := newOrigin(t, false)
	users := htpasswdFile(t, "alice", "s3cret-pw")
	p := startSluice(t, "users: "+users+"\nhosts: {allowed.test: 127.0.0.1}\n", nil)
	url := "http://allowed.test:" + o.port + "/auth"

	out, _ := curl(t, "-i", "-x", "http://"+p.addr, url)
	if !strings.HasPrefix(out, "HTTP/1.1 407") || !strings.Contains(out, "Proxy-Authenticate: Basic realm=\"sluice\"\r\n") {
		t.Fatalf("no credentials: want 407 with the exact header:\n%s", out)
	}
	out, _ = curl(t, "-i", "-p", "-x", "http://"+p.addr, url)
	if !strings.Contains(out, "407") {
		t.Fatalf("CONNECT without credentials: want 407:\n%s", out)
	}
	out, code := curl(t, "-x", "http://"+p.addr, "--proxy-user", "alice:s3cret-pw", url)
	if code != 0 || !strings.Contains(out, "path=/auth") {
		t.Fatalf("with credentials: exit %d: %s", code, out)
	}
	out, code = curl(t, "-p", "-x", "http://"+p.addr, "--proxy-user", "alice:s3cret-pw", url)
	if code != 0 || !strings.Contains(out, "path=/auth") {
		t.Fatalf("CONNECT with credentials: exit %d: %s", code, out)
	}
	out, _ = curl(t, "-i", "-x", "http://"+p.addr, "--proxy-user", "alice:wrong", url)
	if !strings.HasPrefix(out, "HTTP/1.1 407") {
		t.Fatalf("wrong password: want 407:\n%s", out)
	}
	out, code = curl(t, "--socks5-hostname", p.addr, "--proxy-user", "alice:s3cret-pw", url)
	if code != 0 || !strings.Contains(out, "path=/auth") {
		t.Fatalf("SOCKS5 with credentials: exit %d: %s", code, out)
	}
	if _, code = curl(t, "--socks5-hostname", p.addr, url); code == 0 {
		t.Fatal("SOCKS5 without credentials succeeded")
	}
	if _, code = curl(t, "--socks4a", p.addr, url); code == 0 {
		t.Fatal("SOCKS4a succeeded while authentication is on")
	}
	if strings.Contains(p.Log(), "s3cret-pw") || strings.Contains(p.Log(), "wrong") && strings.Contains(p.Log(), "alice:wrong") {
		t.Fatal("a password reached the log")
	}
}

// TestClientsACL: a client outside `clients` is closed before any request
// is read, and logged.
func TestClientsACL(t *testing.T) {
	o := newOrigin(t, false)
	p := startSluice(t, "clients: [127.0.0.5/32]\nhosts: {allowed.test: 127.0.0.1}\n", nil)
	url := "http://allowed.test:" + o.port + "/acl"
	if out, code := curl(t, "-x", "http://"+p.addr, url); code == 0 {
		t.Fatalf("client 127.0.0.1 not in clients was served: %s", out)
	}
	if out, code := curl(t, "--interface", "127.0.0.5", "-x", "http://"+p.addr, url); code != 0 || !strings.Contains(out, "path=/acl") {
		t.Fatalf("client 127.0.0.5: exit %d: %s", code, out)
	}
	p.waitLog(t, `not in .clients`)
}

// TestSilentClientIsClosed: a client that sends nothing is closed after
// the handshake timeout.
func TestSilentClientIsClosed(t *testing.T) {
	p := startSluice(t, "timeouts: {handshake: 1s}\n", nil)
	c, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	n, err := c.Read(make([]byte, 1))
	if err != io.EOF || n != 0 {
		t.Fatalf("read from a silent connection: n=%d err=%v, want EOF (closed by sluice)", n, err)
	}
}
