package test

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Credentials of the leak test's proxy user.
const (
	leakUser = "soak"
	leakPass = "Leak-5wQ8rT"
)

// leakEnv is what one aborted client talks to.
type leakEnv struct {
	proxy string // Sluice's port
	echo  string // tcpEcho origin
	web   string // trickle HTTP origin
	hole  string // black hole
	auth  string // Proxy-Authorization header line
}

// leakClient is one way of abandoning a connection. It returns true when
// the client got as far as the scenario means to (a response, a tunnel),
// so that the test can tell that the interesting paths were reached.
type leakClient struct {
	name string
	run  func(e *leakEnv, c *net.TCPConn, br *bufio.Reader, rng *rand.Rand) bool
}

// cut writes a random strict prefix of msg, possibly empty.
func cut(c net.Conn, msg []byte, rng *rand.Rand) {
	c.Write(msg[:rng.IntN(len(msg))])
}

// pause sleeps up to max, so that aborts land at different moments of the
// proxy's work (a dial in progress, a body being copied).
func pause(rng *rand.Rand, max time.Duration) { time.Sleep(time.Duration(rng.Int64N(int64(max)))) }

func (e *leakEnv) httpGet(target, path string) []byte {
	return fmt.Appendf(nil, "GET http://%s%s HTTP/1.1\r\nHost: %s\r\n%s\r\n", target, path, target, e.auth)
}

func (e *leakEnv) connectReq(target string) []byte {
	return fmt.Appendf(nil, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n%s\r\n", target, target, e.auth)
}

// socksAuth is the SOCKS5 username/password sub-negotiation (RFC 1929).
func socksAuth() []byte {
	b := []byte{1, byte(len(leakUser))}
	b = append(b, leakUser...)
	b = append(b, byte(len(leakPass)))
	return append(b, leakPass...)
}

// socksReq is a SOCKS5 CONNECT request for an IPv4 host:port.
func socksReq(target string) []byte {
	ap := netip.MustParseAddrPort(target)
	b := []byte{5, 1, 0, 1}
	a4 := ap.Addr().As4()
	b = append(b, a4[:]...)
	return binary.BigEndian.AppendUint16(b, ap.Port())
}

// socksHello greets and authenticates; it reports whether both succeeded.
func socksHello(c net.Conn, br *bufio.Reader) bool {
	c.Write([]byte{5, 1, 2})
	var sel [2]byte
	if _, err := io.ReadFull(br, sel[:]); err != nil || sel != [2]byte{5, 2} {
		return false
	}
	c.Write(socksAuth())
	var st [2]byte
	_, err := io.ReadFull(br, st[:])
	return err == nil && st == [2]byte{1, 0}
}

// socksTunnel opens a SOCKS5 tunnel to target; it reports success.
func socksTunnel(c net.Conn, br *bufio.Reader, target string) bool {
	if !socksHello(c, br) {
		return false
	}
	c.Write(socksReq(target))
	var rep [10]byte // IPv4 bound address
	_, err := io.ReadFull(br, rep[:])
	return err == nil && rep[1] == 0
}

// connectTunnel opens a CONNECT tunnel to target; it reports success.
func (e *leakEnv) connectTunnel(c net.Conn, br *bufio.Reader, target string) bool {
	c.Write(e.connectReq(target))
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	return err == nil && resp.StatusCode == 200
}

// echoSome writes n random bytes into a tunnel to the echo origin and
// reads back a random part of them; it reports whether what came back is
// what went in.
func echoSome(c net.Conn, br *bufio.Reader, rng *rand.Rand) bool {
	msg := make([]byte, 1+rng.IntN(8192))
	for i := range msg {
		msg[i] = byte(rng.Uint32())
	}
	c.Write(msg)
	got := make([]byte, 1+rng.IntN(len(msg)))
	_, err := io.ReadFull(br, got)
	return err == nil && string(got) == string(msg[:len(got)])
}

// halfCloseEcho sends bytes, half-closes and reads the echo to the end: the
// proxy must carry the FIN both ways and then let go of both sides.
func halfCloseEcho(c *net.TCPConn, br *bufio.Reader, rng *rand.Rand) bool {
	msg := strings.Repeat("h", 1+rng.IntN(4096))
	c.Write([]byte(msg))
	c.CloseWrite()
	got, err := io.ReadAll(br)
	return err == nil && string(got) == msg
}

var leakClients = []leakClient{
	{"silent", func(e *leakEnv, c *net.TCPConn, _ *bufio.Reader, rng *rand.Rand) bool {
		pause(rng, 20*time.Millisecond)
		return true
	}},
	{"http mid-headers", func(e *leakEnv, c *net.TCPConn, _ *bufio.Reader, rng *rand.Rand) bool {
		cut(c, e.httpGet(e.web, "/fast"), rng)
		pause(rng, 20*time.Millisecond)
		return true
	}},
	{"http mid-body", func(e *leakEnv, c *net.TCPConn, br *bufio.Reader, rng *rand.Rand) bool {
		c.Write(e.httpGet(e.web, "/slow"))
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != 200 {
			return false
		}
		io.CopyN(io.Discard, resp.Body, int64(rng.IntN(32<<10)))
		return true
	}},
	{"http dial to black hole", func(e *leakEnv, c *net.TCPConn, _ *bufio.Reader, rng *rand.Rand) bool {
		c.Write(e.httpGet(e.hole, "/"))
		pause(rng, 300*time.Millisecond)
		return true
	}},
	{"http half-closed", func(e *leakEnv, c *net.TCPConn, br *bufio.Reader, rng *rand.Rand) bool {
		c.Write(e.httpGet(e.web, "/fast"))
		c.CloseWrite()
		_, err := io.ReadAll(br) // whatever the answer: the connection must end
		return err == nil
	}},
	{"http keep-alive then mid-headers", func(e *leakEnv, c *net.TCPConn, br *bufio.Reader, rng *rand.Rand) bool {
		// The origin closes after each response; the proxy keeps the
		// client's connection for the next request.
		c.Write(e.httpGet(e.web, "/fast"))
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != 200 {
			return false
		}
		io.Copy(io.Discard, resp.Body)
		cut(c, e.httpGet(e.web, "/fast"), rng)
		return true
	}},
	{"connect mid-request", func(e *leakEnv, c *net.TCPConn, _ *bufio.Reader, rng *rand.Rand) bool {
		cut(c, e.connectReq(e.echo), rng)
		pause(rng, 20*time.Millisecond)
		return true
	}},
	{"connect dial to black hole", func(e *leakEnv, c *net.TCPConn, _ *bufio.Reader, rng *rand.Rand) bool {
		c.Write(e.connectReq(e.hole))
		pause(rng, 300*time.Millisecond)
		return true
	}},
	{"connect mid-tunnel", func(e *leakEnv, c *net.TCPConn, br *bufio.Reader, rng *rand.Rand) bool {
		return e.connectTunnel(c, br, e.echo) && echoSome(c, br, rng)
	}},
	{"connect idle tunnel", func(e *leakEnv, c *net.TCPConn, br *bufio.Reader, rng *rand.Rand) bool {
		ok := e.connectTunnel(c, br, e.echo)
		pause(rng, 50*time.Millisecond)
		return ok
	}},
	{"connect half-closed", func(e *leakEnv, c *net.TCPConn, br *bufio.Reader, rng *rand.Rand) bool {
		return e.connectTunnel(c, br, e.echo) && halfCloseEcho(c, br, rng)
	}},
	{"socks5 mid-greeting", func(e *leakEnv, c *net.TCPConn, _ *bufio.Reader, rng *rand.Rand) bool {
		cut(c, []byte{5, 2, 0, 2}, rng)
		pause(rng, 20*time.Millisecond)
		return true
	}},
	{"socks5 mid-auth", func(e *leakEnv, c *net.TCPConn, br *bufio.Reader, rng *rand.Rand) bool {
		c.Write([]byte{5, 1, 2})
		var sel [2]byte
		if _, err := io.ReadFull(br, sel[:]); err != nil || sel != [2]byte{5, 2} {
			return false
		}
		cut(c, socksAuth(), rng)
		pause(rng, 20*time.Millisecond)
		return true
	}},
	{"socks5 mid-request", func(e *leakEnv, c *net.TCPConn, br *bufio.Reader, rng *rand.Rand) bool {
		if !socksHello(c, br) {
			return false
		}
		cut(c, socksReq(e.echo), rng)
		pause(rng, 20*time.Millisecond)
		return true
	}},
	{"socks5 dial to black hole", func(e *leakEnv, c *net.TCPConn, br *bufio.Reader, rng *rand.Rand) bool {
		if !socksHello(c, br) {
			return false
		}
		c.Write(socksReq(e.hole))
		pause(rng, 300*time.Millisecond)
		return true
	}},
	{"socks5 mid-tunnel", func(e *leakEnv, c *net.TCPConn, br *bufio.Reader, rng *rand.Rand) bool {
		return socksTunnel(c, br, e.echo) && echoSome(c, br, rng)
	}},
	{"socks5 half-closed", func(e *leakEnv, c *net.TCPConn, br *bufio.Reader, rng *rand.Rand) bool {
		return socksTunnel(c, br, e.echo) && halfCloseEcho(c, br, rng)
	}},
}

// leakConfig keeps the proxy's own waits short, so that everything a
// client abandons is released within the test's bounded wait: a dial to
// the black hole gives up after 2 s, a silent tunnel after 4 s.
const leakConfig = `
admin: 127.0.0.1:0
users: %s
timeouts: {dial: 2s, handshake: 3s, idle: 4s}
`

// TestLeakAbortedClients drives 1,000 clients through Sluice's HTTP,
// CONNECT and SOCKS5 front ends, each abandoning its connection at a
// random protocol point (mid-headers, mid-greeting, mid-auth, mid-request,
// during a dial to a black hole, mid-body, mid-tunnel, half-closed), some
// with a FIN and some with a RST. Afterwards the process's open fds (from
// /proc/PID/fd) and goroutines (from the admin listener's goroutine
// profile) must come back to what they were before, and the echo origin
// must hold no connection open.
func TestLeakAbortedClients(t *testing.T) {
	const (
		clients     = 1000
		concurrency = 16
		fdSlack     = 4
		goSlack     = 8
	)
	users := htpasswdFile(t, leakUser, leakPass)
	p := startSluice(t, fmt.Sprintf(leakConfig, users), nil)
	admin := p.adminAddr(t)
	echo := newTCPEcho(t)
	env := &leakEnv{
		proxy: p.addr, echo: echo.addr, web: newTrickleOrigin(t), hole: newBlackHole(t),
		auth: "Proxy-Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte(leakUser+":"+leakPass)) + "\r\n",
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)

	// Warm up every path once, so that what is built lazily and kept (the
	// route's transport, the users cache) is in the baseline.
	// Dials to the black hole are left out: they would still be pending
	// when the baseline is read.
	for i, lc := range leakClients {
		if !strings.Contains(lc.name, "black hole") {
			runLeakClient(t, env, lc, rand.New(rand.NewPCG(seed, uint64(i))), false)
		}
	}
	base := settle(t, p, admin)
	t.Logf("baseline: %s\n%s", base, describeFDs(p.cmd.Process.Pid))

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var (
		reached = make([]atomic.Int64, len(leakClients))
		ran     = make([]atomic.Int64, len(leakClients))
		next    atomic.Int64
		wg      sync.WaitGroup
	)
	for range concurrency {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := next.Add(1) - 1
				if i >= clients {
					return
				}
				rng := rand.New(rand.NewPCG(seed, uint64(1000+i)))
				k := rng.IntN(len(leakClients))
				ran[k].Add(1)
				if runLeakClient(t, env, leakClients[k], rng, rng.IntN(2) == 0) {
					reached[k].Add(1)
				}
			}
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		t.Fatalf("the %d clients did not finish within 3 minutes (%d started)", clients, next.Load())
	}
	peak := measure(t, p, admin, false)
	var summary []string
	for k, lc := range leakClients {
		summary = append(summary, fmt.Sprintf("%s %d/%d", lc.name, reached[k].Load(), ran[k].Load()))
		if ran[k].Load() > 0 && reached[k].Load() == 0 {
			t.Errorf("%q never reached its protocol point in %d runs: the test did not exercise it", lc.name, ran[k].Load())
		}
	}
	t.Logf("clients (reached/ran): %s", strings.Join(summary, ", "))
	t.Logf("right after the clients: %s", peak)

	// Everything must be released within the proxy's own timeouts (idle 4s,
	// dial 2s) plus margin for a loaded machine: first sockets and
	// goroutines, then, after a collection, every fd.
	deadline := time.Now().Add(60 * time.Second)
	fail := func(now resources) {
		_, prof := httpGet(t, "http://"+admin+"/debug/pprof/goroutine?debug=1")
		t.Fatalf("after up to 60 s: %s, baseline %s (slack %d fds, %d goroutines); the echo origin holds %d connections\n"+
			"fds:\n%s\ngoroutines:\n%.12000s", now, base, fdSlack, goSlack, echo.open.Load(), describeFDs(p.cmd.Process.Pid), prof)
	}
	var now resources
	for {
		now = measure(t, p, admin, false)
		if now.sockets <= base.sockets+fdSlack && now.goroutines <= base.goroutines+goSlack && echo.open.Load() == 0 {
			break
		}
		if time.Now().After(deadline) {
			fail(now)
		}
		time.Sleep(250 * time.Millisecond)
	}
	for {
		now = measure(t, p, admin, true)
		if now.fds <= base.fds+fdSlack && now.goroutines <= base.goroutines+goSlack {
			break
		}
		if time.Now().After(deadline) {
			fail(now)
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Logf("after: %s (baseline %s)\n%s", now, base, describeFDs(p.cmd.Process.Pid))
	if out := p.Log(); strings.Contains(out, "panic") {
		t.Errorf("the proxy logged a panic:\n%s", out)
	}
}

// runLeakClient runs one client of kind lc against env and abandons its
// connection, with a RST when rst is set. It reports whether the client
// reached its protocol point.
func runLeakClient(t *testing.T, env *leakEnv, lc leakClient, rng *rand.Rand, rst bool) bool {
	c, err := net.DialTimeout("tcp", env.proxy, 10*time.Second)
	if err != nil {
		t.Errorf("%s: dialing the proxy: %v", lc.name, err)
		return false
	}
	tc := c.(*net.TCPConn)
	defer func() {
		if rst {
			tc.SetLinger(0)
		}
		tc.Close()
	}()
	tc.SetDeadline(time.Now().Add(15 * time.Second)) // every client is bounded in time
	return lc.run(env, tc, bufio.NewReader(tc), rng)
}

// settle waits until the process's fds and goroutines, read after a
// collection, hold still (the same twice in a row, half a second apart)
// and returns them.
func settle(t *testing.T, p *proc, admin string) resources {
	t.Helper()
	prev := measure(t, p, admin, true)
	for range 40 { // bounded: 20 s
		time.Sleep(500 * time.Millisecond)
		cur := measure(t, p, admin, true)
		if cur == prev {
			return cur
		}
		prev = cur
	}
	t.Fatalf("the process never settled: last %s", prev)
	return prev
}
