package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sluiceproxy/sluice/filter"
)

// envProxyHits counts connections to the bogus proxy that TestMain puts in
// HTTP_PROXY, HTTPS_PROXY and ALL_PROXY: Sluice must never read them.
var envProxyHits atomic.Int64

func TestMain(m *testing.M) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			envProxyHits.Add(1)
			c.Close()
		}
	}()
	bogus := "http://" + ln.Addr().String()
	for _, k := range []string{"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"} {
		os.Setenv(k, bogus)
	}
	for _, k := range []string{"NO_PROXY", "no_proxy"} {
		os.Unsetenv(k)
	}
	code := m.Run()
	ln.Close()
	if n := envProxyHits.Load(); n != 0 {
		fmt.Fprintf(os.Stderr, "FAIL: the proxy from the environment was contacted %d times\n", n)
		code = 1
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "FAIL: goroutines leaked: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// testPolicy blocks the hosts in block and allows the rest; it records
// every request it sees.
type testPolicy struct {
	block map[string]filter.Decision
	mu    sync.Mutex
	seen  []filter.Request
}

func (p *testPolicy) Decide(r filter.Request) filter.Decision {
	p.mu.Lock()
	p.seen = append(p.seen, r)
	p.mu.Unlock()
	if d, ok := p.block[r.Host]; ok {
		return d
	}
	return filter.Decision{Verdict: filter.Allow, Reason: "no rule matched", Default: true}
}

func (p *testPolicy) last() filter.Request {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.seen) == 0 {
		return filter.Request{}
	}
	return p.seen[len(p.seen)-1]
}

var blockedDecision = filter.Decision{
	Verdict:  filter.Block,
	Reason:   "matched rule",
	Rule:     filter.RuleRef{Index: 3, File: "sluice.yaml", Line: 12, Text: `block: ["<script>alert(1)</script>"]`},
	Category: "social",
}

// testDial is a plain net.Dialer that maps names ending in ".test" to
// 127.0.0.1 and refuses anything off loopback. It counts dials.
type testDial struct{ n atomic.Int64 }

func (d *testDial) Dial(ctx context.Context, route, network, addr string) (net.Conn, error) {
	d.n.Add(1)
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if strings.HasSuffix(host, ".test") {
		host = "127.0.0.1"
	}
	a, err := netip.ParseAddr(host)
	if err != nil || !a.IsLoopback() {
		return nil, fmt.Errorf("test dialer: %s is not on loopback", addr)
	}
	var nd net.Dialer
	return nd.DialContext(ctx, network, net.JoinHostPort(host, port))
}

// blackhole is a Dial hook that never connects: it waits for the dial
// deadline and returns its error.
func blackhole(ctx context.Context, route, network, addr string) (net.Conn, error) {
	<-ctx.Done()
	return nil, &net.OpError{Op: "dial", Net: network, Err: ctx.Err()}
}

// logBuf collects JSON log lines.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// fixture is one proxy on loopback with its policy, dialer and log.
type fixture struct {
	srv    *Server
	addr   string // host:port of the proxy
	url    *url.URL
	policy *testPolicy
	dial   *testDial
	log    *logBuf
}

// newFixture starts a proxy; edit adjusts the Server before it serves.
func newFixture(t *testing.T, edit func(*Server)) *fixture {
	t.Helper()
	f := &fixture{
		policy: &testPolicy{block: map[string]filter.Decision{"blocked.test": blockedDecision}},
		dial:   &testDial{},
		log:    &logBuf{},
	}
	f.srv = &Server{
		Policy:      f.policy,
		Dial:        f.dial.Dial,
		Logger:      slog.New(slog.NewJSONHandler(f.log, &slog.HandlerOptions{Level: slog.LevelInfo})),
		IdleTimeout: 10 * time.Second,
	}
	if edit != nil {
		edit(f.srv)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.addr = ln.Addr().String()
	f.url = &url.URL{Scheme: "http", Host: f.addr}
	_, stop := serve(f.srv, ln)
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return f
}

// serve runs h on ln in an http.Server the way proxy/server does: the
// server's BaseContext is the context of every request and tunnel. stop
// cancels it (ending tunnels), closes the server and returns Serve's error
// (nil when it was closed).
func serve(h *Server, ln net.Listener) (*http.Server, func() error) {
	base, cancel := context.WithCancel(context.Background())
	hs := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 30 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return WithBase(base) },
	}
	done := make(chan error, 1)
	go func() { done <- hs.Serve(ln) }()
	return hs, func() error {
		cancel()
		hs.Close()
		err := <-done
		h.CloseIdleConnections()
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	}
}

// client returns a net/http client that uses the proxy.
func (f *fixture) client(t *testing.T, user *url.Userinfo) *http.Client {
	u := *f.url
	u.User = user
	tr := &http.Transport{
		Proxy:              http.ProxyURL(&u),
		DisableCompression: true,
		ForceAttemptHTTP2:  false,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// raw opens a TCP conn to the proxy.
func (f *fixture) raw(t *testing.T) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// origin is a counting loopback listener serving handler over TCP.
type origin struct {
	ln      net.Listener
	accepts atomic.Int64
	wg      sync.WaitGroup
	conns   sync.Map // open conns, closed at cleanup
}

// newOrigin runs serve for every accepted conn.
func newOrigin(t *testing.T, serve func(net.Conn)) *origin {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o := &origin{ln: ln}
	o.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			o.accepts.Add(1)
			o.conns.Store(c, true)
			o.wg.Go(func() {
				defer o.conns.Delete(c)
				defer c.Close()
				c.SetDeadline(time.Now().Add(20 * time.Second))
				serve(c)
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		o.conns.Range(func(c, _ any) bool { c.(net.Conn).Close(); return true })
		o.wg.Wait()
	})
	return o
}

func (o *origin) port() string {
	_, p, _ := net.SplitHostPort(o.ln.Addr().String())
	return p
}

// echo copies everything back and half-closes at EOF.
func echo(c net.Conn) {
	io.Copy(c, c)
	c.(*net.TCPConn).CloseWrite()
}

// readResponse reads one response head (and body) from br.
func readResponse(t *testing.T, br *bufio.Reader, method string) *http.Response {
	t.Helper()
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// curl runs the real curl with a clean environment (no proxy variables).
func curl(t *testing.T, args ...string) (string, error) {
	t.Helper()
	path, err := exec.LookPath("curl")
	if err != nil {
		t.Fatal("curl is required: ", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, append([]string{"-sS", "--max-time", "15"}, args...)...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), errors.Join(err, errors.New(stderr.String()))
	}
	return string(out), nil
}

// watchHeap samples the heap in use until the test ends; the returned
// function reports the highest sample so far.
func watchHeap(t *testing.T) func() uint64 {
	var peak atomic.Uint64
	sample := func() {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		for {
			p := peak.Load()
			if ms.HeapInuse <= p || peak.CompareAndSwap(p, ms.HeapInuse) {
				return
			}
		}
	}
	runtime.GC()
	sample()
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				sample()
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-done })
	return func() uint64 { sample(); return peak.Load() }
}

func httptraceWithGotConn(ctx context.Context, got func(net.Conn)) context.Context {
	return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		GotConn: func(i httptrace.GotConnInfo) { got(i.Conn) },
	})
}
