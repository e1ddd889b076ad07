package dial

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice/proxy/dial/dialtest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	code := m.Run()
	shared.Close()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

const banner = "220 hello from the origin\r\n"

// exchange proves a tunnel keeps every byte: it reads the origin's
// banner, then sends a line and expects the origin's count of it. With
// halfClose it then sends more, half-closes, and expects the origin's
// final count and EOF: the origin saw the half-close and could still
// answer.
func exchange(t *testing.T, c net.Conn, wantBanner string, halfClose bool) {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	if wantBanner != "" {
		got := make([]byte, len(wantBanner))
		if _, err := io.ReadFull(br, got); err != nil {
			t.Fatalf("reading banner: %v", err)
		}
		if string(got) != wantBanner {
			t.Fatalf("banner = %q, want %q", got, wantBanner)
		}
	}
	line := strings.Repeat("x", 10000) + "\n"
	if _, err := io.WriteString(c, line); err != nil {
		t.Fatalf("write: %v", err)
	}
	ack, err := br.ReadString('\n')
	if want := fmt.Sprintf("ack %d\n", len(line)); ack != want {
		t.Fatalf("answer = %q (%v), want %q", ack, err, want)
	}
	if !halfClose {
		return
	}
	if _, err := io.WriteString(c, "tail"); err != nil {
		t.Fatalf("write: %v", err)
	}
	cw, ok := c.(interface{ CloseWrite() error })
	if !ok {
		t.Fatalf("%T has no CloseWrite", c)
	}
	if err := cw.CloseWrite(); err != nil {
		t.Fatalf("CloseWrite: %v", err)
	}
	rest, err := io.ReadAll(br)
	if err != nil {
		t.Fatalf("reading answer: %v", err)
	}
	if want := fmt.Sprintf("got %d\n", len(line)+4); string(rest) != want {
		t.Fatalf("answer after half-close = %q, want %q", rest, want)
	}
}

func dialVia(t *testing.T, chain []*url.URL, tlsCA []byte, lookup *countingLookup, target string) (net.Conn, error) {
	t.Helper()
	d := &Direct{}
	if lookup != nil {
		d.LookupHook = lookup.hook
	}
	r, err := NewRouter(Config{
		Routes:  map[string]RouteSpec{"up": {Chain: chain, TLSCA: tlsCA}},
		Default: "up",
		Direct:  d,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	return r.Dial(ctx, "", "tcp", target)
}

// upstreamKinds lists one upstream of each kind, real where one exists.
func upstreamKinds(t *testing.T) []struct {
	name      string
	halfClose bool
	chain     func(t *testing.T) ([]*url.URL, []byte)
} {
	// squid 5 and microsocks close the whole tunnel when the client
	// half-closes, so half-close is checked through the others: danted
	// (socks5 and socks5h, with and without username auth; socks4a) and
	// the Go upstreams (http, https, socks4a).
	return []struct {
		name      string
		halfClose bool
		chain     func(t *testing.T) ([]*url.URL, []byte)
	}{
		{"squid", false, func(t *testing.T) ([]*url.URL, []byte) { return []*url.URL{squidURL(t)}, nil }},
		{"squid-auth", false, func(t *testing.T) ([]*url.URL, []byte) { return []*url.URL{squidAuthURL(t)}, nil }},
		{"danted-socks5", true, func(t *testing.T) ([]*url.URL, []byte) { return []*url.URL{danteURL(t)}, nil }},
		{"danted-socks5-auth", true, func(t *testing.T) ([]*url.URL, []byte) { return []*url.URL{danteAuthURL(t, "socks5")}, nil }},
		{"danted-socks5h-auth", true, func(t *testing.T) ([]*url.URL, []byte) { return []*url.URL{danteAuthURL(t, "socks5h")}, nil }},
		{"microsocks-socks5h-auth", false, func(t *testing.T) ([]*url.URL, []byte) { return []*url.URL{microURL(t)}, nil }},
		{"go-http-eager", true, func(t *testing.T) ([]*url.URL, []byte) {
			s := startConnectProxy(t, &connectProxy{eager: true, user: testUser, pass: testPass}, nil)
			return []*url.URL{mustURL(t, "http://"+testUser+":"+testPass+"@"+s.addr())}, nil
		}},
		{"go-https", true, func(t *testing.T) ([]*url.URL, []byte) {
			cert, pemCA, _ := dialtest.SelfSigned(t)
			s := startConnectProxy(t, &connectProxy{eager: true}, &cert)
			return []*url.URL{mustURL(t, "https://"+s.addr())}, pemCA
		}},
		{"go-socks4a", true, func(t *testing.T) ([]*url.URL, []byte) {
			s := startSOCKS4a(t, nil)
			return []*url.URL{mustURL(t, "socks4a://"+s.addr())}, nil
		}},
		{"chain-squid-danted", false, func(t *testing.T) ([]*url.URL, []byte) {
			return []*url.URL{squidURL(t), danteURL(t)}, nil
		}},
		{"chain-squid-danted-auth", false, func(t *testing.T) ([]*url.URL, []byte) {
			return []*url.URL{squidURL(t), danteAuthURL(t, "socks5h")}, nil
		}},
		{"chain-https-microsocks", false, func(t *testing.T) ([]*url.URL, []byte) {
			cert, pemCA, _ := dialtest.SelfSigned(t)
			s := startConnectProxy(t, &connectProxy{}, &cert)
			return []*url.URL{mustURL(t, "https://"+s.addr()), microURL(t)}, pemCA
		}},
	}
}

// TestUpstreamBannerAndHalfClose sends a banner-first, half-close
// exchange through every kind of upstream: no byte may be lost, and the
// origin must see our half-close and still answer.
func TestUpstreamBannerAndHalfClose(t *testing.T) {
	origin := startOrigin(t, banner)
	for _, k := range upstreamKinds(t) {
		t.Run(k.name, func(t *testing.T) {
			chain, ca := k.chain(t)
			c, err := dialVia(t, chain, ca, nil, origin.addr())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			exchange(t, c, banner, k.halfClose)
		})
	}
}

// TestNoLocalLookup dials a name through each upstream kind: the
// connection works (the upstream resolves it) and the local resolver is
// never asked.
func TestNoLocalLookup(t *testing.T) {
	origin := startOrigin(t, banner)
	for _, k := range upstreamKinds(t) {
		t.Run(k.name, func(t *testing.T) {
			chain, ca := k.chain(t)
			name := leakName // squid and the Go upstreams resolve it
			if strings.Contains(k.name, "danted") || strings.Contains(k.name, "microsocks") {
				name = "localhost" // from /etc/hosts of the upstream
			}
			var lookups countingLookup
			c, err := dialVia(t, chain, ca, &lookups, net.JoinHostPort(name, fmt.Sprint(origin.port())))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			exchange(t, c, banner, k.halfClose)
			if n := lookups.count(); n != 0 {
				t.Fatalf("%d local lookups (%v), want 0", n, lookups.names)
			}
		})
	}
}

// TestSOCKS5SendsNames checks on the wire that both socks5 and socks5h
// send the target name unresolved (ATYP 0x03).
func TestSOCKS5SendsNames(t *testing.T) {
	for _, scheme := range []string{"socks5", "socks5h"} {
		t.Run(scheme, func(t *testing.T) {
			got := make(chan []byte, 1)
			s := serve(t, listen(t), func(c net.Conn) {
				c.SetDeadline(time.Now().Add(5 * time.Second))
				buf := make([]byte, 3)
				if _, err := io.ReadFull(c, buf); err != nil { // 05 01 00
					return
				}
				c.Write([]byte{5, 0})
				req := make([]byte, 5+len(leakName)+2)
				if _, err := io.ReadFull(c, req); err != nil {
					return
				}
				got <- req
				c.Write([]byte{5, socks5NotAllowed, 0, 1, 0, 0, 0, 0, 0, 0})
			})
			var lookups countingLookup
			_, err := dialVia(t, []*url.URL{mustURL(t, scheme+"://"+s.addr())}, nil, &lookups, leakName+":443")
			if Classify(err) != KindUpstreamRefused { // its 0x02 is its policy's refusal
				t.Fatalf("err = %v, want KindUpstreamRefused", err)
			}
			req := <-got
			want := append([]byte{5, 1, 0, 3, byte(len(leakName))}, leakName...)
			want = append(want, 1, 187)
			if string(req) != string(want) {
				t.Fatalf("request = % x, want % x", req, want)
			}
			if lookups.count() != 0 {
				t.Fatalf("local lookups: %v", lookups.names)
			}
		})
	}
}

// TestRawTCPConn checks that with nothing buffered the connection handed
// back over a direct first hop is the *net.TCPConn itself.
func TestRawTCPConn(t *testing.T) {
	origin := startOrigin(t, "") // silent until we write
	for _, k := range []struct {
		name      string
		halfClose bool
		url       func(t *testing.T) *url.URL
	}{
		{"squid", false, squidURL},
		{"danted", true, danteURL},
		{"danted-auth", true, func(t *testing.T) *url.URL { return danteAuthURL(t, "socks5") }},
		{"microsocks", false, microURL},
		{"socks4a", true, func(t *testing.T) *url.URL { return mustURL(t, "socks4a://"+startSOCKS4a(t, nil).addr()) }},
	} {
		t.Run(k.name, func(t *testing.T) {
			c, err := dialVia(t, []*url.URL{k.url(t)}, nil, nil, origin.addr())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, ok := c.(*net.TCPConn); !ok {
				t.Fatalf("conn is %T, want *net.TCPConn", c)
			}
			exchange(t, c, "", k.halfClose)
		})
	}
}

// TestEagerOriginIsReplayed forces the origin's first bytes into the same
// read as the 200 and checks they come out first.
func TestEagerOriginIsReplayed(t *testing.T) {
	origin := startOrigin(t, banner)
	p := startConnectProxy(t, &connectProxy{eager: true}, nil)
	c, err := dialVia(t, []*url.URL{mustURL(t, "http://"+p.addr())}, nil, nil, origin.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, ok := c.(*replayConn); !ok {
		t.Fatalf("conn is %T, want *replayConn (banner read with the 200)", c)
	}
	exchange(t, c, banner, true)
}

// TestUpstreamFailures checks the Kind of each failure, and that no error
// text holds a password.
func TestUpstreamFailures(t *testing.T) {
	closed := closedAddr(t)
	badPass := func(u *url.URL) *url.URL {
		v := *u
		v.User = url.UserPassword(testUser, "wrong-pw-123")
		return &v
	}
	tests := []struct {
		name     string
		chain    func(t *testing.T) []*url.URL
		target   string
		want     Kind
		wantHop  int
		hopFault bool
	}{
		{"squid wrong password", func(t *testing.T) []*url.URL { return []*url.URL{badPass(squidAuthURL(t))} }, "127.0.0.1:9", KindUpstreamAuth, 1, true},
		{"squid no password", func(t *testing.T) []*url.URL {
			u := *squidAuthURL(t)
			u.User = nil
			return []*url.URL{&u}
		}, "127.0.0.1:9", KindUpstreamAuth, 1, true},
		{"squid origin refused", func(t *testing.T) []*url.URL { return []*url.URL{squidURL(t)} }, closed, KindUpstream, 1, false},
		{"microsocks wrong password", func(t *testing.T) []*url.URL { return []*url.URL{badPass(microURL(t))} }, closed, KindUpstreamAuth, 1, true},
		{"danted origin refused", func(t *testing.T) []*url.URL { return []*url.URL{danteURL(t)} }, closed, KindRefused, 1, false},
		{"danted wrong password", func(t *testing.T) []*url.URL { return []*url.URL{badPass(danteAuthURL(t, "socks5"))} }, closed, KindUpstreamAuth, 1, true},
		{"danted socks5h wrong password", func(t *testing.T) []*url.URL { return []*url.URL{badPass(danteAuthURL(t, "socks5h"))} }, closed, KindUpstreamAuth, 1, true},
		{"danted no password", func(t *testing.T) []*url.URL {
			u := danteAuthURL(t, "socks5")
			u.User = nil
			return []*url.URL{u}
		}, closed, KindUpstreamAuth, 1, true},
		{"danted-auth origin refused", func(t *testing.T) []*url.URL { return []*url.URL{danteAuthURL(t, "socks5")} }, closed, KindRefused, 1, false},
		{"upstream down", func(t *testing.T) []*url.URL {
			return []*url.URL{mustURL(t, "http://u:topsecret@"+closedAddr(t))}
		}, "127.0.0.1:9", KindRefused, 1, true},
		{"second hop down", func(t *testing.T) []*url.URL {
			return []*url.URL{danteURL(t), mustURL(t, "socks5://u:topsecret@"+closedAddr(t))}
		}, "127.0.0.1:9", KindRefused, 2, true},
		{"socks4a rejected", func(t *testing.T) []*url.URL {
			return []*url.URL{mustURL(t, "socks4a://"+startSOCKS4a(t, nil).addr())}
		}, closed, KindUpstream, 1, false},
		{"go proxy 407", func(t *testing.T) []*url.URL {
			s := startConnectProxy(t, &connectProxy{user: testUser, pass: testPass}, nil)
			return []*url.URL{mustURL(t, "http://"+testUser+":topsecret@"+s.addr())}
		}, "127.0.0.1:9", KindUpstreamAuth, 1, true},
		{"go proxy 403 is a refusal, not an auth failure", func(t *testing.T) []*url.URL {
			s := startConnectProxy(t, &connectProxy{deny: true, user: testUser, pass: testPass}, nil)
			return []*url.URL{mustURL(t, "http://"+testUser+":"+testPass+"@"+s.addr())}
		}, "127.0.0.1:9", KindUpstreamRefused, 1, false},
		{"https unknown CA", func(t *testing.T) []*url.URL {
			cert, _, _ := dialtest.SelfSigned(t)
			s := startConnectProxy(t, &connectProxy{}, &cert)
			return []*url.URL{mustURL(t, "https://u:topsecret@"+s.addr())}
		}, "127.0.0.1:9", KindUpstream, 1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := dialVia(t, tt.chain(t), nil, nil, tt.target)
			if err == nil {
				c.Close()
				t.Fatal("dial succeeded")
			}
			var de *Error
			if !errors.As(err, &de) {
				t.Fatalf("error %T %v is not *Error", err, err)
			}
			if de.Kind != tt.want || de.Hop != tt.wantHop || de.hopFault != tt.hopFault {
				t.Fatalf("kind %v hop %d fault %v, want %v hop %d fault %v: %v", de.Kind, de.Hop, de.hopFault, tt.want, tt.wantHop, tt.hopFault, err)
			}
			if de.Upstream != "up" || de.Addr != tt.target || de.HopAddr == "" {
				t.Fatalf("error does not name route, target and hop: %+v", de)
			}
			for _, pw := range []string{"wrong-pw-123", "topsecret", testPass} {
				if strings.Contains(err.Error(), pw) {
					t.Fatalf("error leaks a password: %v", err)
				}
			}
		})
	}
}

// TestHopTimeout: an upstream that accepts but never answers fails the
// hop with KindTimeout within HopTimeout and is marked down; a caller's
// own deadline is KindTimeout but does not mark the hop down.
func TestHopTimeout(t *testing.T) {
	hold := make(chan struct{})
	s := serve(t, listen(t), func(c net.Conn) {
		select {
		case <-hold:
		case <-time.After(10 * time.Second):
		}
	})
	defer close(hold)
	r, err := NewRouter(Config{
		Routes:     map[string]RouteSpec{"mute": {Chain: []*url.URL{mustURL(t, "socks5://"+s.addr())}}},
		HopTimeout: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.Dial(context.Background(), "mute", "tcp", "127.0.0.1:9")
	if k := Classify(err); k != KindTimeout {
		t.Fatalf("hop timeout: kind %v (%v), want timeout", k, err)
	}
	if !r.isDown(r.routes["mute"]) {
		t.Fatal("timed-out hop not marked down")
	}

	r2, _ := NewRouter(Config{
		Routes:     map[string]RouteSpec{"mute": {Chain: []*url.URL{mustURL(t, "http://"+s.addr())}}},
		HopTimeout: time.Minute,
	})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err = r2.Dial(ctx, "mute", "tcp", "127.0.0.1:9")
	if k := Classify(err); k != KindTimeout {
		t.Fatalf("caller deadline: kind %v (%v), want timeout", k, err)
	}
	if r2.isDown(r2.routes["mute"]) {
		t.Fatal("caller's deadline marked the hop down")
	}

	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	_, err = r2.Dial(ctx, "mute", "tcp", "127.0.0.1:9")
	if err == nil {
		t.Fatal("dial with a cancelled context succeeded")
	}
}

// TestDirect covers the hosts map, lookups and the Kind of each failure.
func TestDirect(t *testing.T) {
	origin := startOrigin(t, banner)
	closed := closedAddr(t)
	notFound := func(_ context.Context, host string) ([]netip.Addr, error) {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	blocking := func(ctx context.Context, _ string) ([]netip.Addr, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	tests := []struct {
		name    string
		d       *Direct
		addr    string
		ctxWait time.Duration
		want    Kind // KindOther with ok means success
		ok      bool
		lookups int
	}{
		{"ip literal", &Direct{}, origin.addr(), 0, 0, true, 0},
		{"hosts map, name case and dot", &Direct{Hosts: map[string][]netip.Addr{"origin.test": {netip.MustParseAddr("127.0.0.1")}}},
			fmt.Sprintf("Origin.TEST.:%d", origin.port()), 0, 0, true, 0},
		{"hosts map tries in order", &Direct{Hosts: map[string][]netip.Addr{"origin.test": {netip.MustParseAddr("127.0.0.3"), netip.MustParseAddr("127.0.0.1")}}},
			fmt.Sprintf("origin.test:%d", origin.port()), 0, 0, true, 0},
		{"lookup hook", &Direct{}, fmt.Sprintf("hooked.test:%d", origin.port()), 0, 0, true, 1},
		{"refused", &Direct{}, closed, 0, KindRefused, false, 0},
		{"dns not found", &Direct{LookupHook: notFound}, "nonexistent.invalid:80", 0, KindDNS, false, 0},
		{"ctx deadline", &Direct{LookupHook: blocking}, "slow.test:80", 50 * time.Millisecond, KindTimeout, false, 0},
		{"own timeout", &Direct{Timeout: 50 * time.Millisecond, LookupHook: blocking}, "slow.test:80", 0, KindTimeout, false, 0},
		{"no port", &Direct{}, "127.0.0.1", 0, KindOther, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lookups := 0
			if tt.d.LookupHook == nil {
				tt.d.LookupHook = func(_ context.Context, host string) ([]netip.Addr, error) {
					lookups++
					if host == "hooked.test" {
						return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
					}
					return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
				}
			}
			ctx := context.Background()
			if tt.ctxWait > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.ctxWait)
				defer cancel()
			}
			c, err := tt.d.DialContext(ctx, "tcp", tt.addr)
			if tt.ok {
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				if _, ok := c.(*net.TCPConn); !ok {
					t.Fatalf("conn is %T, want *net.TCPConn", c)
				}
				exchange(t, c, banner, true)
			} else {
				var de *Error
				if !errors.As(err, &de) {
					t.Fatalf("err %T %v is not *Error", err, err)
				}
				if de.Kind != tt.want || de.Addr != tt.addr {
					t.Fatalf("kind %v addr %q, want %v %q: %v", de.Kind, de.Addr, tt.want, tt.addr, err)
				}
			}
			if lookups != tt.lookups {
				t.Fatalf("%d lookups, want %d", lookups, tt.lookups)
			}
		})
	}
}

func TestClassify(t *testing.T) {
	op := func(errno error) error {
		return &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", errno)}
	}
	tests := []struct {
		name string
		err  error
		want Kind
	}{
		{"nil", nil, KindOther},
		{"refused", op(syscall.ECONNREFUSED), KindRefused},
		{"host unreachable", op(syscall.EHOSTUNREACH), KindHostUnreachable},
		{"net unreachable", op(syscall.ENETUNREACH), KindNetUnreachable},
		{"etimedout", op(syscall.ETIMEDOUT), KindTimeout},
		{"dns not found", &net.DNSError{Err: "no such host", IsNotFound: true}, KindDNS},
		{"dns timeout", &net.DNSError{Err: "i/o timeout", IsTimeout: true}, KindTimeout},
		{"ctx deadline", fmt.Errorf("wrapped: %w", context.DeadlineExceeded), KindTimeout},
		{"conn deadline", os.ErrDeadlineExceeded, KindTimeout},
		{"cancelled", context.Canceled, KindOther},
		{"typed wins", fmt.Errorf("x: %w", &Error{Kind: KindUpstreamAuth, Err: syscall.ECONNREFUSED}), KindUpstreamAuth},
		{"unknown", errors.New("connection refused"), KindOther}, // text is not looked at
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Classify(tt.err); got != tt.want {
				t.Fatalf("Classify(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

// TestSOCKS4aUserID checks the user id and that a name goes unresolved.
func TestSOCKS4aUserID(t *testing.T) {
	origin := startOrigin(t, banner)
	users := make(chan string, 1)
	s := startSOCKS4a(t, users)
	var lookups countingLookup
	c, err := dialVia(t, []*url.URL{mustURL(t, "socks4a://bob@"+s.addr())}, nil, &lookups, net.JoinHostPort(leakName, fmt.Sprint(origin.port())))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	exchange(t, c, banner, true)
	if u := <-users; u != "bob" {
		t.Fatalf("user id %q, want bob", u)
	}
	if lookups.count() != 0 {
		t.Fatalf("local lookups: %v", lookups.names)
	}
}

// TestDanteSOCKS4 runs the in-project socks4a client against danted,
// which speaks SOCKS v4 too.
func TestDanteSOCKS4(t *testing.T) {
	origin := startOrigin(t, banner)
	u := *danteURL(t)
	u.Scheme = "socks4a"
	c, err := dialVia(t, []*url.URL{&u}, nil, nil, origin.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	exchange(t, c, banner, true)
}

func TestFromURLErrors(t *testing.T) {
	tests := []struct {
		url  string
		want error
	}{
		{"ftp://proxy:21", ErrScheme},
		{"socks4://proxy:1080", ErrScheme},
		{"http://:3128", ErrUpstreamURL},
		{"http://proxy:0", ErrUpstreamURL},
		{"http://proxy:99999", ErrUpstreamURL},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			_, err := FromURL(mustURL(t, tt.url), nil, Options{})
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
	if _, err := FromURL(nil, nil, Options{}); !errors.Is(err, ErrUpstreamURL) {
		t.Fatalf("nil url: %v", err)
	}
	d, err := FromURL(mustURL(t, "http://127.0.0.1:1"), nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"a b:80", "host\r\nX: y:80", "host", "host:0"} {
		if _, err := d.DialContext(context.Background(), "tcp", bad); !errors.Is(err, ErrTarget) {
			t.Errorf("target %q: err = %v, want ErrTarget", bad, err)
		}
	}
	if _, err := d.DialContext(context.Background(), "udp", "host:53"); !errors.Is(err, ErrNetwork) {
		t.Errorf("udp: err = %v, want ErrNetwork", err)
	}
}

// TestTransportThroughSquid sends plain HTTP through the route's Transport:
// absolute form to squid (which adds its Via), with credentials from the
// URL for the authenticating squid.
func TestTransportThroughSquid(t *testing.T) {
	seen := make(chan http.Header, 4)
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Clone()
		io.WriteString(w, "hello "+r.URL.Path)
	}))
	defer origin.Close()
	tests := []struct {
		name  string
		chain func(t *testing.T) []*url.URL
	}{
		{"squid", func(t *testing.T) []*url.URL { return []*url.URL{squidURL(t)} }},
		{"squid-auth", func(t *testing.T) []*url.URL { return []*url.URL{squidAuthURL(t)} }},
		{"danted-then-squid", func(t *testing.T) []*url.URL { return []*url.URL{danteURL(t), squidURL(t)} }},
		{"danted (dialed)", func(t *testing.T) []*url.URL { return []*url.URL{danteURL(t)} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("HTTP_PROXY", "http://"+closedAddr(t)) // must be ignored
			r, err := NewRouter(Config{Routes: map[string]RouteSpec{"up": {Chain: tt.chain(t)}}})
			if err != nil {
				t.Fatal(err)
			}
			defer r.CloseIdleConnections()
			tr := r.Transport("up")
			if tr != r.Transport("up") {
				t.Fatal("Transport is not one per route")
			}
			if tr == r.Transport("direct") {
				t.Fatal("route shares direct's Transport")
			}
			req, _ := http.NewRequest("GET", origin.URL+"/page", nil)
			resp, err := tr.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(body) != "hello /page" {
				t.Fatalf("status %d body %q", resp.StatusCode, body)
			}
			h := <-seen
			viaSquid := strings.Contains(strings.ToLower(h.Get("Via")), "squid")
			if wantSquid := strings.Contains(tt.name, "squid"); viaSquid != wantSquid {
				t.Fatalf("Via %q: through squid = %v, want %v", h.Get("Via"), viaSquid, wantSquid)
			}
			if h.Get("Proxy-Authorization") != "" {
				t.Fatal("origin saw Proxy-Authorization")
			}
		})
	}
}

// TestTransportHTTPSUpstream sends plain HTTP in absolute form to an
// https upstream verified through TLSCA.
func TestTransportHTTPSUpstream(t *testing.T) {
	cert, pemCA, _ := dialtest.SelfSigned(t)
	lines := make(chan string, 1)
	ln := listen(t)
	ln = tlsListener(ln, cert)
	serve(t, ln, func(c net.Conn) {
		br := bufio.NewReader(c)
		line, _ := br.ReadString('\n')
		lines <- line
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
	})
	r, err := NewRouter(Config{Routes: map[string]RouteSpec{"tls": {
		Chain: []*url.URL{mustURL(t, "https://"+ln.Addr().String())}, TLSCA: pemCA,
	}}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.CloseIdleConnections()
	req, _ := http.NewRequest("GET", "http://origin.test/x", nil)
	resp, err := r.Transport("tls").RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := <-lines; got != "GET http://origin.test/x HTTP/1.1\r\n" {
		t.Fatalf("upstream got %q, want absolute form", got)
	}
}

// TestTransportParentAuthFailure: a parent's 407 on plain HTTP is Sluice's
// problem, not the client's: it becomes an upstream auth failure that
// names the upstream, never the password.
func TestTransportParentAuthFailure(t *testing.T) {
	u := *squidAuthURL(t)
	u.User = url.UserPassword(testUser, "wrong-pw-123")
	r, err := NewRouter(Config{Routes: map[string]RouteSpec{"corp": {Chain: []*url.URL{&u}}}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.CloseIdleConnections()
	req, _ := http.NewRequest("GET", "http://127.0.0.1:9/page", nil)
	resp, err := r.Transport("corp").RoundTrip(req)
	if err == nil {
		resp.Body.Close()
		t.Fatalf("got status %d, want an error", resp.StatusCode)
	}
	var de *Error
	if !errors.As(err, &de) || de.Kind != KindUpstreamAuth || de.Upstream != "corp" || de.Hop != 1 {
		t.Fatalf("err = %#v, want KindUpstreamAuth on corp hop 1", err)
	}
	if strings.Contains(err.Error(), "wrong-pw-123") {
		t.Fatalf("the password leaked into %q", err)
	}
}

// TestRedirect: a SafeSearch decision dials its enforcement host on the
// port asked for; no enforcement host, or no port, leaves addr alone.
func TestRedirect(t *testing.T) {
	for _, tt := range []struct{ addr, host, want string }{
		{"www.google.com:443", "forcesafesearch.google.com", "forcesafesearch.google.com:443"},
		{"[2001:db8::1]:80", "strict.bing.com", "strict.bing.com:80"},
		{"www.google.com:443", "", "www.google.com:443"},
		{"noport", "strict.bing.com", "noport"},
	} {
		if got := Redirect(tt.addr, tt.host); got != tt.want {
			t.Errorf("Redirect(%q, %q) = %q, want %q", tt.addr, tt.host, got, tt.want)
		}
	}
}
