package test

// Circuit isolation (issue 16): a SOCKS5 upstream written here, standing in
// for Tor's SocksPort, records the username of every connection it gets;
// Sluice must send one username per identity.

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	xproxy "golang.org/x/net/proxy"
)

// recSOCKS is a SOCKS5 server on loopback that demands username/password,
// records (username, target host) for each CONNECT, and joins every
// connection to one loopback origin whatever the target (so target names
// are never resolved or dialed).
type recSOCKS struct {
	ln     net.Listener
	origin string

	mu   sync.Mutex
	seen []recConn
}

type recConn struct{ user, host string }

func newRecSOCKS(t *testing.T, origin string) *recSOCKS {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &recSOCKS{ln: ln, origin: origin}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go s.serve(c)
		}
	}()
	return s
}

func (s *recSOCKS) addr() string { return s.ln.Addr().String() }

func (s *recSOCKS) serve(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	var b [262]byte
	if _, err := io.ReadFull(c, b[:2]); err != nil || b[0] != 5 {
		return
	}
	if _, err := io.ReadFull(c, b[:b[1]]); err != nil {
		return
	}
	c.Write([]byte{5, 2}) // username/password, always
	if _, err := io.ReadFull(c, b[:2]); err != nil || b[0] != 1 {
		return
	}
	ulen := int(b[1])
	if _, err := io.ReadFull(c, b[:ulen+1]); err != nil {
		return
	}
	user := string(b[:ulen])
	plen := int(b[ulen])
	if _, err := io.ReadFull(c, b[:plen]); err != nil {
		return
	}
	c.Write([]byte{1, 0})
	if _, err := io.ReadFull(c, b[:4]); err != nil || b[1] != 1 {
		return
	}
	var host string
	switch b[3] {
	case 1:
		io.ReadFull(c, b[:4])
		host = net.IP(b[:4]).String()
	case 4:
		io.ReadFull(c, b[:16])
		host = net.IP(b[:16]).String()
	case 3:
		io.ReadFull(c, b[:1])
		n := int(b[0])
		io.ReadFull(c, b[:n])
		host = string(b[:n])
	default:
		return
	}
	io.ReadFull(c, b[:2]) // port
	s.mu.Lock()
	s.seen = append(s.seen, recConn{user, host})
	s.mu.Unlock()
	o, err := net.Dial("tcp", s.origin)
	if err != nil {
		c.Write([]byte{5, 5, 0, 1, 0, 0, 0, 0, 0, 0})
		return
	}
	defer o.Close()
	c.Write([]byte{5, 0, 0, 1, 127, 0, 0, 1, 0, 0})
	c.SetDeadline(time.Time{})
	go func() { io.Copy(o, c); o.(*net.TCPConn).CloseWrite() }()
	io.Copy(c, o)
}

// users returns the usernames recorded for host, in order, and forgets
// nothing.
func (s *recSOCKS) users(host string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, r := range s.seen {
		if r.host == host {
			out = append(out, r.user)
		}
	}
	return out
}

func (s *recSOCKS) all() []recConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]recConn(nil), s.seen...)
}

// isoGetFrom fetches target through the HTTP proxy at proxy, from the local
// address src (127.0.0.1 or 127.0.0.2: two clients), without keep-alive.
func isoGetFrom(t *testing.T, proxy, src, target string) string {
	t.Helper()
	if !strings.Contains(proxy, "://") {
		proxy = "http://" + proxy
	}
	pu, _ := url.Parse(proxy)
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 10 * time.Second}
	c := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{
		Proxy: http.ProxyURL(pu), DialContext: d.DialContext, DisableKeepAlives: true,
	}}
	resp, err := c.Get(target)
	if err != nil {
		t.Fatalf("GET %s from %s: %v", target, src, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(b), "hello from echo") {
		t.Fatalf("GET %s from %s: %s\n%s", target, src, resp.Status, b)
	}
	return string(b)
}

// isoConnectFrom opens a CONNECT tunnel through proxy from src and sends one
// request on it.
func isoConnectFrom(t *testing.T, proxy, src, target string) {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 10 * time.Second}
	c, err := d.Dial("tcp", proxy)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %[1]s\r\n\r\nGET / HTTP/1.1\r\nHost: %[1]s\r\nConnection: close\r\n\r\n", target)
	b, _ := io.ReadAll(c)
	if !strings.Contains(string(b), "200") || !strings.Contains(string(b), "hello from echo") {
		t.Fatalf("CONNECT %s from %s:\n%s", target, src, b)
	}
}

// isoSocksFrom reaches target through Sluice's SOCKS5 front end from src.
func isoSocksFrom(t *testing.T, proxy, src, target string) {
	t.Helper()
	fwd := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 10 * time.Second}
	d, err := xproxy.SOCKS5("tcp", proxy, nil, fwd)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := d.(xproxy.ContextDialer).DialContext(ctx, "tcp", target)
	if err != nil {
		t.Fatalf("socks5 %s from %s: %v", target, src, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	host, _, _ := net.SplitHostPort(target)
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", host)
	b, _ := io.ReadAll(c)
	if !strings.Contains(string(b), "hello from echo") {
		t.Fatalf("socks5 %s from %s:\n%s", target, src, b)
	}
}

var hexUser = regexp.MustCompile(`^[0-9a-f]{32}$`)

// oneUser fails unless every name in us is the same well-formed isolation
// name, and returns it.
func oneUser(t *testing.T, what string, us []string) string {
	t.Helper()
	if len(us) == 0 {
		t.Fatalf("%s: the upstream saw no connection", what)
	}
	for _, u := range us {
		if u != us[0] || !hexUser.MatchString(u) {
			t.Fatalf("%s: usernames %q, want one 32-hex-digit name", what, us)
		}
	}
	return us[0]
}

func TestIsolateClient(t *testing.T) {
	t.Parallel()
	origin := newEchoOrigin(t)
	up := newRecSOCKS(t, origin.Listener.Addr().String())
	cache := t.TempDir()
	cfg := fmt.Sprintf(`default: allow
cache_dir: %s
upstreams:
  tor: {url: "socks5h://%s", isolate: client}
upstream: tor
`, cache, up.addr())
	p := startSluice(t, cfg, nil)
	port := origin.port
	// Client A: two sites, three front ends. Client B: one site.
	isoGetFrom(t, p.addr, "127.0.0.1", "http://one.site.test:"+port+"/")
	isoConnectFrom(t, p.addr, "127.0.0.1", "two.other.test:"+port)
	isoGetFrom(t, p.addr, "127.0.0.2", "http://one.site.test:"+port+"/")
	a := up.users("one.site.test")
	if len(a) != 2 {
		t.Fatalf("want 2 connections for one.site.test, got %q", up.all())
	}
	idA, idB := a[0], a[1]
	if !hexUser.MatchString(idA) || !hexUser.MatchString(idB) {
		t.Fatalf("usernames %q are not isolation names", a)
	}
	if idA == idB {
		t.Fatalf("two clients share the identity %s", idA)
	}
	if got := oneUser(t, "client A, second site (CONNECT)", up.users("two.other.test")); got != idA {
		t.Errorf("client A on a second site: %s, want its identity %s", got, idA)
	}
	isoSocksFrom(t, p.addr, "127.0.0.1", "three.test:"+port)
	if got := oneUser(t, "client A through the SOCKS front end", up.users("three.test")); got != idA {
		t.Errorf("client A through SOCKS: %s, want %s", got, idA)
	}
	// The name is a keyed hash: neither address appears in it, and
	// `sluice check` shows the same name.
	for _, u := range []string{idA, idB} {
		if strings.Contains(u, "127") {
			t.Errorf("username %s shows an address", u)
		}
	}
	out, code := runCLI(t, p.dir, "check", "--config", filepath.Join(p.dir, "sluice.yaml"), "--client", "127.0.0.2", "http://one.site.test/")
	if code != 0 || !strings.Contains(out, "isolation: client, upstream user "+idB) {
		t.Errorf("check --client 127.0.0.2: exit %d, want the identity %s:\n%s", code, idB, out)
	}
	fi, err := os.Stat(filepath.Join(cache, "isolation.key"))
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Size() != 32 {
		t.Fatalf("isolation key: %v %v", fi, err)
	}
	// After a restart the key, so the identity, is the same.
	p.stop(t)
	p2 := startSluice(t, cfg, nil)
	isoGetFrom(t, p2.addr, "127.0.0.1", "http://four.test:"+port+"/")
	if got := oneUser(t, "client A after a restart", up.users("four.test")); got != idA {
		t.Errorf("client A after a restart: %s, want %s", got, idA)
	}
	if strings.Contains(p2.Log(), idA) || strings.Contains(p.Log(), idA) {
		t.Errorf("the log shows an isolation name")
	}
}

func TestIsolateDestination(t *testing.T) {
	t.Parallel()
	origin := newEchoOrigin(t)
	up := newRecSOCKS(t, origin.Listener.Addr().String())
	cfg := fmt.Sprintf(`default: allow
cache_dir: %s
upstreams:
  tor: {url: "socks5h://%s", isolate: destination}
upstream: tor
`, t.TempDir(), up.addr())
	p := startSluice(t, cfg, nil)
	port := origin.port
	isoGetFrom(t, p.addr, "127.0.0.1", "http://a.site.test:"+port+"/")
	isoGetFrom(t, p.addr, "127.0.0.1", "http://b.site.test:"+port+"/")
	isoConnectFrom(t, p.addr, "127.0.0.1", "www.other.test:"+port)
	isoGetFrom(t, p.addr, "127.0.0.2", "http://a.site.test:"+port+"/")
	sa := up.users("a.site.test")
	if len(sa) != 2 {
		t.Fatalf("want 2 connections for a.site.test, got %q", up.all())
	}
	site := sa[0]
	if got := oneUser(t, "same site, other name", up.users("b.site.test")); got != site {
		t.Errorf("b.site.test: %s, want the identity of a.site.test %s (one registrable domain)", got, site)
	}
	other := oneUser(t, "other site", up.users("www.other.test"))
	if other == site {
		t.Errorf("two sites of one client share the identity %s", site)
	}
	if sa[1] == site || sa[1] == other {
		t.Errorf("client B shares an identity with client A: %q", up.all())
	}
}

func TestIsolateConfigErrors(t *testing.T) {
	t.Parallel()
	cases := []struct{ cfg, want string }{
		{"upstreams:\n  tor: {url: \"socks5h://u:p@127.0.0.1:9050\", isolate: client}\n", "has credentials of its own"},
		{"upstreams:\n  tor: {url: \"socks4a://127.0.0.1:9050\", isolate: client}\n", "socks4a"},
		{"upstreams:\n  tor: {url: \"socks5h://127.0.0.1:9050\", isolate: circuit}\n", `unknown mode "circuit"`},
		{"upstreams:\n  a: socks5h://127.0.0.1:9050\n  tor: {failover: [a], isolate: user}\n", "applies to a chain only"},
		{"upstreams:\n  tor: {url: \"socks5h://127.0.0.1:9050\", chain: [\"socks5h://127.0.0.1:9051\"]}\n", "one of chain or url"},
	}
	for _, c := range cases {
		dir, path := writeConfig(t, "default: allow\n"+c.cfg, nil)
		out, code := runCLI(t, dir, "config", "validate", "--config", path)
		if code == 0 || !strings.Contains(out, c.want) || !regexp.MustCompile(`sluice\.yaml:[34]\b`).MatchString(out) {
			t.Errorf("config %q: exit %d, want an error at sluice.yaml:line saying %q:\n%s", c.cfg, code, c.want, out)
		}
		if strings.Contains(out, ":p@") {
			t.Errorf("config error shows a password:\n%s", out)
		}
	}
}

// TestIsolateCheckCreatesNoKey: `sluice check` and `config validate` (often
// run as another user than the server) never create the key; check says
// the name is not known yet.
func TestIsolateCheckCreatesNoKey(t *testing.T) {
	t.Parallel()
	cache := t.TempDir()
	dir, path := writeConfig(t, fmt.Sprintf("default: allow\ncache_dir: %s/c\nupstreams:\n  tor: {url: \"socks5h://127.0.0.1:9\", isolate: user}\nupstream: tor\n", cache), nil)
	out, code := runCLI(t, dir, "check", "--config", path, "--user", "alice", "example.test")
	if code != 0 || !strings.Contains(out, "isolation: user, upstream user unknown until sluice serve creates") {
		t.Errorf("check before serve: exit %d:\n%s", code, out)
	}
	if out, code := runCLI(t, dir, "config", "validate", "--config", path); code != 0 {
		t.Errorf("validate: exit %d:\n%s", code, out)
	}
	if _, err := os.Stat(filepath.Join(cache, "c", "isolation.key")); !os.IsNotExist(err) {
		t.Errorf("check or validate created the key: %v", err)
	}
}

func TestIsolateUser(t *testing.T) {
	t.Parallel()
	origin := newEchoOrigin(t)
	up := newRecSOCKS(t, origin.Listener.Addr().String())
	users := htpasswdFile(t, "alice", "wonderland", "bob", "builder")
	cfg := fmt.Sprintf(`default: allow
users: %s
cache_dir: %s
upstreams:
  tor: {url: "socks5h://%s", isolate: user}
upstream: tor
`, users, t.TempDir(), up.addr())
	p := startSluice(t, cfg, nil)
	port := origin.port
	isoGetFrom(t, "http://alice:wonderland@"+p.addr, "127.0.0.1", "http://a.test:"+port+"/")
	isoGetFrom(t, "http://alice:wonderland@"+p.addr, "127.0.0.2", "http://b.test:"+port+"/")
	isoGetFrom(t, "http://bob:builder@"+p.addr, "127.0.0.1", "http://c.test:"+port+"/")
	a := oneUser(t, "alice", up.users("a.test"))
	if got := oneUser(t, "alice from another address", up.users("b.test")); got != a {
		t.Errorf("alice from two addresses: %s and %s, want one identity", a, got)
	}
	if got := oneUser(t, "bob", up.users("c.test")); got == a {
		t.Errorf("alice and bob share the identity %s", a)
	}
}
