package socks

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	xproxy "golang.org/x/net/proxy"

	"github.com/sluiceproxy/sluice/filter"
)

// closeWrite half-closes c, looking through the wrapper x/net/proxy returns.
func closeWrite(t *testing.T, c net.Conn) {
	t.Helper()
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
		return
	}
	f, ok := forwards.Load(c.LocalAddr().String())
	if !ok {
		t.Fatalf("cannot half-close %T", c)
	}
	f.(*net.TCPConn).CloseWrite()
}

// forwards maps a local address to the TCP connection tcpForward made, so a
// test can half-close through x/net/proxy's wrapper.
var forwards sync.Map

// tcpForward is the forward dialer of x/net/proxy clients in tests.
type tcpForward struct{}

func (tcpForward) Dial(network, addr string) (net.Conn, error) {
	return tcpForward{}.DialContext(context.Background(), network, addr)
}

func (tcpForward) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, network, addr)
	if err == nil {
		forwards.Store(c.LocalAddr().String(), c)
	}
	return c, err
}

// roundTrip writes msg through c, half-closes and returns everything echoed back.
func roundTrip(t *testing.T, c net.Conn, msg string) string {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatal(err)
	}
	closeWrite(t, c)
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestXProxyClient drives the server with golang.org/x/net/proxy, with and
// without authentication, over IPv4, IPv6 and a domain name.
func TestXProxyClient(t *testing.T) {
	echo4 := echoServer(t, "tcp", "127.0.0.1:0")
	_, echoPort, _ := net.SplitHostPort(echo4)
	var echo6 string
	if ln, err := net.Listen("tcp", "[::1]:0"); err == nil {
		ln.Close()
		echo6 = echoServer(t, "tcp", "[::1]:0")
	}

	cases := []struct {
		name     string
		auth     Authenticator
		creds    *xproxy.Auth
		target   string
		wantErr  bool
		wantHost string
	}{
		{"ipv4 no auth", nil, nil, echo4, false, "127.0.0.1"},
		{"name no auth", nil, nil, "Echo.Test.:" + echoPort, false, "echo.test"},
		{"ipv6 no auth", nil, nil, echo6, false, "::1"},
		{"ipv4 with auth", staticAuth{"alice", "s3cret"}, &xproxy.Auth{User: "alice", Password: "s3cret"}, echo4, false, "127.0.0.1"},
		{"wrong password", staticAuth{"alice", "s3cret"}, &xproxy.Auth{User: "alice", Password: "guess"}, echo4, true, ""},
		{"auth required, none given", staticAuth{"alice", "s3cret"}, nil, echo4, true, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.target == "" {
				t.Skip("no IPv6 loopback in this sandbox")
			}
			pol := &recordingPolicy{}
			dl := &countingDial{hosts: map[string]string{"echo.test:" + echoPort: echo4}}
			srv := &Server{Policy: pol, Dial: dl.Dial}
			if tc.auth != nil {
				srv.Auth = tc.auth
			}
			addr := start(t, srv)
			d, err := xproxy.SOCKS5("tcp", addr, tc.creds, tcpForward{})
			if err != nil {
				t.Fatal(err)
			}
			c, err := d.(xproxy.ContextDialer).DialContext(context.Background(), "tcp", tc.target)
			if tc.wantErr {
				if err == nil {
					c.Close()
					t.Fatal("dial succeeded, want an error")
				}
				if dl.calls.Load() != 0 {
					t.Errorf("dialer called %d times for a refused client", dl.calls.Load())
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if got := roundTrip(t, c, "hello through socks"); got != "hello through socks" {
				t.Errorf("echo = %q", got)
			}
			reqs := pol.requests()
			if len(reqs) != 1 || reqs[0].Host != tc.wantHost {
				t.Fatalf("policy saw %+v, want host %q", reqs, tc.wantHost)
			}
			if tc.creds != nil && reqs[0].User != tc.creds.User {
				t.Errorf("request user = %q, want %q", reqs[0].User, tc.creds.User)
			}
			if !reqs[0].Client.IsLoopback() || reqs[0].Time.IsZero() {
				t.Errorf("request client/time not set: %+v", reqs[0])
			}
		})
	}
}

// TestBlockedNameNoDNS proves a blocked name is refused before any lookup:
// the Dial hook is never called and the Go resolver sends no query. An
// allowed name reaches the Dial hook unresolved.
func TestBlockedNameNoDNS(t *testing.T) {
	var queries atomic.Int64
	old := net.DefaultResolver
	net.DefaultResolver = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, address string) (net.Conn, error) {
		queries.Add(1)
		return nil, fmt.Errorf("test: dns is off (asked %s)", address)
	}}
	t.Cleanup(func() { net.DefaultResolver = old })

	echo := echoServer(t, "tcp", "127.0.0.1:0")
	pol := &recordingPolicy{block: map[string]bool{"tracker.example": true}}
	dl := &countingDial{hosts: map[string]string{"allowed.example:80": echo}}
	addr := start(t, &Server{Policy: pol, Dial: dl.Dial})
	d, err := xproxy.SOCKS5("tcp", addr, nil, tcpForward{})
	if err != nil {
		t.Fatal(err)
	}
	if c, err := d.Dial("tcp", "tracker.example:443"); err == nil {
		c.Close()
		t.Fatal("blocked name was connected")
	} else if !strings.Contains(err.Error(), "not allowed") {
		t.Errorf("error = %v, want a 'connection not allowed by ruleset' reply", err)
	}
	if n := dl.calls.Load(); n != 0 {
		t.Errorf("Dial hook called %d times for a blocked name", n)
	}
	c, err := d.Dial("tcp", "allowed.example:80")
	if err != nil {
		t.Fatal(err)
	}
	if got := roundTrip(t, c, "x"); got != "x" {
		t.Errorf("echo = %q", got)
	}
	c.Close()
	if got := dl.got(); !slices.Equal(got, []string{"allowed.example:80"}) {
		t.Errorf("Dial hook got %q, want the name unresolved", got)
	}
	if n := queries.Load(); n != 0 {
		t.Errorf("%d DNS queries were sent", n)
	}
}

// TestCurl drives the server with the real curl for each SOCKS flavour.
func TestCurl(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Fatal("curl is required (make deps-test installs it): ", err)
	}
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s", r.Host)
	}))
	t.Cleanup(origin.Close)
	_, port, _ := net.SplitHostPort(origin.Listener.Addr().String())

	cases := []struct {
		name     string
		auth     bool
		args     []string
		url      string
		wantHost string // what the policy must see
		wantFail bool
	}{
		{"socks5", false, []string{"--socks5"}, "http://127.0.0.1:" + port + "/", "127.0.0.1", false},
		{"socks5-hostname", false, []string{"--socks5-hostname"}, "http://origin.test:" + port + "/", "origin.test", false},
		{"socks4", false, []string{"--socks4"}, "http://127.0.0.1:" + port + "/", "127.0.0.1", false},
		{"socks4a", false, []string{"--socks4a"}, "http://origin.test:" + port + "/", "origin.test", false},
		{"socks5 proxy-user", true, []string{"--proxy-user", "alice:s3cret", "--socks5-hostname"}, "http://origin.test:" + port + "/", "origin.test", false},
		{"socks5 wrong proxy-user", true, []string{"--proxy-user", "alice:nope", "--socks5-hostname"}, "http://origin.test:" + port + "/", "", true},
		{"socks4a refused with auth on", true, []string{"--socks4a"}, "http://origin.test:" + port + "/", "", true},
		{"socks5-hostname blocked", false, []string{"--socks5-hostname"}, "http://blocked.test:" + port + "/", "blocked.test", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pol := &recordingPolicy{block: map[string]bool{"blocked.test": true}}
			dl := &countingDial{hosts: map[string]string{"origin.test:" + port: origin.Listener.Addr().String()}}
			srv := &Server{Policy: pol, Dial: dl.Dial}
			if tc.auth {
				srv.Auth = staticAuth{"alice", "s3cret"}
			}
			addr := start(t, srv)
			args := append([]string{"-sS", "--max-time", "10"}, tc.args...)
			args = append(args, addr, tc.url)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, curl, args...)
			cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + t.TempDir()}
			out, err := cmd.CombinedOutput()
			if tc.wantFail {
				if err == nil {
					t.Fatalf("curl succeeded: %s", out)
				}
				if dl.calls.Load() != 0 {
					t.Errorf("refused request reached the dialer")
				}
			} else {
				if err != nil {
					t.Fatalf("curl: %v: %s", err, out)
				}
				if !strings.HasPrefix(string(out), "hello ") {
					t.Errorf("body = %q", out)
				}
			}
			reqs := pol.requests()
			if tc.wantHost == "" {
				if len(reqs) != 0 {
					t.Errorf("policy consulted for a refused client: %+v", reqs)
				}
				return
			}
			if len(reqs) != 1 || reqs[0].Host != tc.wantHost {
				t.Errorf("policy saw %+v, want host %q", reqs, tc.wantHost)
			}
		})
	}
}

// TestNetcat drives the server with OpenBSD netcat's -X 5 and -X 4.
func TestNetcat(t *testing.T) {
	nc, err := exec.LookPath("nc")
	if err != nil {
		t.Fatal("nc (netcat-openbsd) is required: ", err)
	}
	echo := echoServer(t, "tcp", "127.0.0.1:0")
	host, port, _ := net.SplitHostPort(echo)
	for _, proto := range []string{"5", "4"} {
		t.Run("X"+proto, func(t *testing.T) {
			addr := start(t, &Server{Policy: allowAll})
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, nc, "-N", "-w", "10", "-X", proto, "-x", addr, host, port)
			cmd.Stdin = strings.NewReader("ping over nc\n")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("nc: %v: %s", err, out)
			}
			if string(out) != "ping over nc\n" {
				t.Errorf("echo = %q", out)
			}
		})
	}
}

// TestAccessLog checks one line per connection with the decision's fields,
// and that the password never appears.
func TestAccessLog(t *testing.T) {
	var buf syncBuffer
	echo := echoServer(t, "tcp", "127.0.0.1:0")
	pol := &recordingPolicy{block: map[string]bool{"blocked.test": true}}
	srv := &Server{Policy: pol, Auth: staticAuth{"alice", "hunter2-secret"}, Logger: slog.New(slog.NewJSONHandler(&buf, nil))}
	addr := start(t, srv)
	d, _ := xproxy.SOCKS5("tcp", addr, &xproxy.Auth{User: "alice", Password: "hunter2-secret"}, tcpForward{})
	c, err := d.Dial("tcp", echo)
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, c, "12345")
	c.Close()
	if _, err := d.Dial("tcp", "blocked.test:80"); err == nil {
		t.Fatal("blocked dial succeeded")
	}
	bad, _ := xproxy.SOCKS5("tcp", addr, &xproxy.Auth{User: "alice", Password: "wrong-secret"}, tcpForward{})
	if _, err := bad.Dial("tcp", echo); err == nil {
		t.Fatal("wrong password accepted")
	}
	srv.Close() // waits for the access lines

	out := buf.String()
	if strings.Contains(out, "hunter2") || strings.Contains(out, "wrong-secret") {
		t.Fatalf("a password leaked into the log:\n%s", out)
	}
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		m := map[string]any{}
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("bad log line %q: %v", l, err)
		}
		lines = append(lines, m)
	}
	if len(lines) != 3 {
		t.Fatalf("got %d access lines, want 3:\n%s", len(lines), out)
	}
	byTarget := map[string]map[string]any{}
	for _, l := range lines {
		for _, k := range []string{"client", "user", "target", "verdict", "up", "down", "dur"} {
			if _, ok := l[k]; !ok {
				t.Errorf("line lacks %q: %v", k, l)
			}
		}
		byTarget[fmt.Sprint(l["verdict"], " ", l["target"])] = l
	}
	if l := byTarget["allow "+echo]; l == nil || l["up"] != 5.0 || l["down"] != 5.0 || l["user"] != "alice" || l["route"] != "direct" {
		t.Errorf("allowed line wrong: %v", l)
	}
	if l := byTarget["block blocked.test:80"]; l == nil || l["reason"] != "domain in block list" || l["rule"] != "rule 1 (test.yaml:3)" || l["category"] != "test" || l["reply"] != "0x02" {
		t.Errorf("blocked line wrong: %v", l)
	}
	if l := byTarget["none "]; l == nil || !strings.Contains(fmt.Sprint(l["err"]), "authentication failed") {
		t.Errorf("auth failure line wrong: %v", l)
	}
	if s := srv.Stats(); s.Conns != 3 || s.Blocked != 1 {
		t.Errorf("stats = %+v", s)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestServeConnReplay serves a connection whose first byte was already
// peeked by a mixed-port listener and is replayed.
func TestServeConnReplay(t *testing.T) {
	echo := echoServer(t, "tcp", "127.0.0.1:0")
	srv := &Server{Policy: allowAll}
	t.Cleanup(func() { srv.Close() })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		var b [1]byte
		if _, err := io.ReadFull(c, b[:]); err != nil {
			c.Close()
			return
		}
		srv.ServeConn(context.Background(), &replayConn{Conn: c, r: io.MultiReader(bytes.NewReader(b[:]), c)})
	}()
	d, _ := xproxy.SOCKS5("tcp", ln.Addr().String(), nil, tcpForward{})
	c, err := d.Dial("tcp", echo)
	if err != nil {
		t.Fatal(err)
	}
	if got := roundTrip(t, c, "replayed"); got != "replayed" {
		t.Errorf("echo = %q", got)
	}
	c.Close()
	<-done
}

type replayConn struct {
	net.Conn
	r io.Reader
}

func (c *replayConn) Read(p []byte) (int, error) { return c.r.Read(p) }

var _ = filter.Allow
