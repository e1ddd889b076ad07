package dial

// Fixtures: real upstream proxies (squid, danted, microsocks, from
// dialtest) started once per test binary, small in-test upstreams (an
// HTTP/HTTPS CONNECT proxy, a SOCKS4a server) and origins.

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice/proxy/dial/dialtest"
)

// Credentials of the authenticating squid and microsocks. The
// authenticating danted takes dialtest.DanteUser and dialtest.DantePass.
const (
	testUser = "alice"
	testPass = "s3cret-pw"
)

// leakName is a name only the upstreams resolve (squid through its own
// hosts file, the in-test upstreams through their maps).
const leakName = "leak.test"

// shared keeps the real upstreams running until TestMain closes it.
var shared dialtest.Shared

// upstream is a real upstream started once per test binary, on first use.
type upstream struct {
	once sync.Once
	url  *url.URL
}

var squidPlain, squidAuth, dante, danteAuth, micro upstream

// get starts the upstream on first use and returns its URL. A start that
// failed fails the test that tried it, and every later test that uses it.
func (u *upstream) get(t *testing.T, start func(t testing.TB) *dialtest.Proc) *url.URL {
	t.Helper()
	u.once.Do(func() { u.url = start(shared.TB(t)).URL() })
	if u.url == nil {
		t.Fatal("this upstream failed to start in an earlier test; see its failure")
	}
	return u.url
}

// Accessors for the shared upstreams.
func squidURL(t *testing.T) *url.URL {
	return squidPlain.get(t, func(t testing.TB) *dialtest.Proc {
		return dialtest.StartSquid(t, dialtest.SquidOptions{Names: []string{leakName}})
	})
}
func squidAuthURL(t *testing.T) *url.URL {
	return squidAuth.get(t, func(t testing.TB) *dialtest.Proc {
		return dialtest.StartSquid(t, dialtest.SquidOptions{Names: []string{leakName}, User: testUser, Pass: testPass})
	})
}
func danteURL(t *testing.T) *url.URL {
	return dante.get(t, func(t testing.TB) *dialtest.Proc { return dialtest.StartDante(t, false) })
}

// danteAuthURL is the authenticating danted, as scheme (socks5 or
// socks5h) with dialtest.DanteUser's credentials.
func danteAuthURL(t *testing.T, scheme string) *url.URL {
	t.Helper()
	u := *danteAuth.get(t, func(t testing.TB) *dialtest.Proc { return dialtest.StartDante(t, true) })
	u.Scheme = scheme
	return &u
}
func microURL(t *testing.T) *url.URL {
	return micro.get(t, func(t testing.TB) *dialtest.Proc { return dialtest.StartMicrosocks(t, testUser, testPass) })
}

// server is a dialtest.Server with the short accessors these tests use.
type server struct{ *dialtest.Server }

func (s server) addr() string { return s.Addr() }
func (s server) port() int    { n, _ := strconv.Atoi(s.Port()); return n }

// serve accepts on ln until cleanup and runs handle per connection.
func serve(t *testing.T, ln net.Listener, handle func(net.Conn)) server {
	t.Helper()
	return server{dialtest.Serve(t, ln, handle)}
}

func listen(t *testing.T) net.Listener { return dialtest.Listen(t) }

// startOrigin starts dialtest's banner-first, byte-counting origin.
func startOrigin(t *testing.T, banner string) server {
	t.Helper()
	return server{dialtest.StartOrigin(t, banner)}
}

// relayBoth copies both ways and half-closes each side at EOF.
func relayBoth(a, b net.Conn) {
	var wg sync.WaitGroup
	cp := func(dst, src net.Conn) {
		defer wg.Done()
		io.Copy(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		} else {
			dst.Close()
		}
	}
	wg.Add(2)
	go cp(a, b)
	go cp(b, a)
	wg.Wait()
}

// resolveTest maps the names only in-test upstreams know.
func resolveTest(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err == nil && (host == leakName || host == "localhost") {
		return net.JoinHostPort("127.0.0.1", port)
	}
	return addr
}

// connectProxy is an in-test HTTP CONNECT upstream. With eager set it
// waits for the target's first bytes and sends them in the same write as
// its 200, to prove the client keeps bytes read along with the response.
// With user set it demands Basic credentials.
type connectProxy struct {
	eager      bool
	deny       bool // answer every CONNECT with its own 403
	user, pass string
	seen       chan string // CONNECT targets, if non-nil
}

func (p *connectProxy) handle(c net.Conn) {
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err != nil {
		return
	}
	var auth string
	for {
		h, err := br.ReadString('\n')
		if err != nil {
			return
		}
		if h == "\r\n" {
			break
		}
		if k, v, ok := strings.Cut(h, ":"); ok && strings.EqualFold(k, "Proxy-Authorization") {
			auth = strings.TrimSpace(v)
		}
	}
	f := strings.Fields(line)
	if len(f) != 3 || f[0] != "CONNECT" {
		io.WriteString(c, "HTTP/1.1 400 Bad Request\r\n\r\n")
		return
	}
	if p.seen != nil {
		p.seen <- f[1]
	}
	if p.user != "" && auth != basicAuth(url.UserPassword(p.user, p.pass)) {
		io.WriteString(c, "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"t\"\r\n\r\n")
		return
	}
	if p.deny {
		io.WriteString(c, "HTTP/1.1 403 Forbidden by policy\r\nContent-Length: 0\r\n\r\n")
		return
	}
	up, err := net.Dial("tcp", resolveTest(f[1]))
	if err != nil {
		io.WriteString(c, "HTTP/1.1 502 Bad Gateway\r\n\r\n")
		return
	}
	defer up.Close()
	ok := []byte("HTTP/1.1 200 Connection established\r\n\r\n")
	if p.eager {
		buf := make([]byte, 512)
		up.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _ := up.Read(buf)
		up.SetReadDeadline(time.Time{})
		ok = append(ok, buf[:n]...)
	}
	if _, err := c.Write(ok); err != nil {
		return
	}
	c.SetDeadline(time.Time{})
	if br.Buffered() > 0 {
		b, _ := br.Peek(br.Buffered())
		up.Write(b)
	}
	if tc, ok := c.(*tls.Conn); ok {
		relayBoth(tlsHalf{tc}, up)
		return
	}
	relayBoth(c, up)
}

// tlsHalf gives a *tls.Conn CloseWrite under the net.Conn interface.
type tlsHalf struct{ *tls.Conn }

// startConnectProxy starts p on loopback, over TLS when cert is set.
func startConnectProxy(t *testing.T, p *connectProxy, cert *tls.Certificate) server {
	t.Helper()
	ln := listen(t)
	if cert != nil {
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{*cert}})
	}
	return serve(t, ln, p.handle)
}

// startSOCKS4a starts an in-test SOCKS4a upstream that resolves leakName
// itself and records the user ids it sees.
func startSOCKS4a(t *testing.T, users chan<- string) server {
	t.Helper()
	return serve(t, listen(t), func(c net.Conn) {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(c)
		var head [8]byte
		if _, err := io.ReadFull(br, head[:]); err != nil || head[0] != 4 || head[1] != 1 {
			return
		}
		user, err := br.ReadString(0)
		if err != nil {
			return
		}
		if users != nil {
			users <- strings.TrimSuffix(user, "\x00")
		}
		port := int(head[2])<<8 | int(head[3])
		host := net.IP(head[4:8]).String()
		if head[4] == 0 && head[5] == 0 && head[6] == 0 && head[7] != 0 {
			name, err := br.ReadString(0)
			if err != nil {
				return
			}
			host = strings.TrimSuffix(name, "\x00")
		}
		up, err := net.Dial("tcp", resolveTest(net.JoinHostPort(host, fmt.Sprint(port))))
		if err != nil {
			c.Write([]byte{0, 91, 0, 0, 0, 0, 0, 0})
			return
		}
		defer up.Close()
		if _, err := c.Write([]byte{0, 90, 0, 0, 0, 0, 0, 0}); err != nil {
			return
		}
		c.SetDeadline(time.Time{})
		relayBoth(c, up)
	})
}

// mustURL parses s or fails the test.
func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// closedAddr is a loopback address where nothing listens.
func closedAddr(t *testing.T) string {
	t.Helper()
	return dialtest.FreeAddr(t)
}

// countingLookup is a LookupHook that counts calls and finds nothing.
type countingLookup struct {
	mu    sync.Mutex
	names []string
}

func (l *countingLookup) hook(_ context.Context, host string) ([]netip.Addr, error) {
	l.mu.Lock()
	l.names = append(l.names, host)
	l.mu.Unlock()
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

func (l *countingLookup) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.names)
}

// tlsListener serves TLS with cert on ln.
func tlsListener(ln net.Listener, cert tls.Certificate) net.Listener {
	return tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}})
}
