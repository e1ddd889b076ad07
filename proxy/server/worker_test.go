package server

import (
	"encoding/binary"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"
)

// socks5Tunnel opens a SOCKS5 tunnel through addr to the loopback origin.
func socks5Tunnel(t testing.TB, addr, origin string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	ap, err := net.ResolveTCPAddr("tcp", origin)
	if err != nil {
		t.Fatal(err)
	}
	req := append([]byte{5, 1, 0, 5, 1, 0, 1}, ap.IP.To4()...)
	c.Write(binary.BigEndian.AppendUint16(req, uint16(ap.Port)))
	var r [12]byte
	if _, err := io.ReadFull(c, r[:]); err != nil || r[3] != 0 {
		t.Fatalf("handshake: % x, %v", r, err)
	}
	return c
}

// TestWorkersReused serves connections one after the other: the goroutine
// that served one serves the next, rather than one goroutine (and one
// stack growth) per connection. A connection that stays open keeps its
// goroutine, and the next connection still gets served at once.
func TestWorkersReused(t *testing.T) {
	origin := echoOrigin(t)
	r := startRun(t, "")
	held := socks5Tunnel(t, r.addr, origin) // keeps one worker busy throughout
	defer held.Close()
	const n = 30
	for i := range n {
		c := socks5Tunnel(t, r.addr, origin)
		if _, err := c.Write([]byte("ping\n")); err != nil {
			t.Fatal(err)
		}
		var b [5]byte
		if _, err := io.ReadFull(c, b[:]); err != nil || string(b[:]) != "ping\n" {
			t.Fatalf("tunnel %d: echo %q, %v", i, b, err)
		}
		c.Close()
		waitFor(t, "the tunnel to end", func() bool { return r.open() == 1 })
	}
	// The held tunnel's worker, the first other one, and a few started
	// while a finished worker had not yet gone back to waiting.
	if w := r.s.workers.Load(); w > n/2 {
		t.Errorf("%d goroutines started for %d connections one after the other", w, n+1)
	}
	t.Logf("%d worker goroutines for %d connections", r.s.workers.Load(), n+1)
}

// strAddr is a net.Addr known only by its string.
type strAddr string

func (a strAddr) Network() string { return "tcp" }
func (a strAddr) String() string  { return string(a) }

// addrConn is a conn with a given remote address.
type addrConn struct {
	net.Conn
	ra net.Addr
}

func (c addrConn) RemoteAddr() net.Addr { return c.ra }

// TestRemoteAddr: a client's address is the same whether the conn gives
// a *net.TCPAddr (read directly) or only a string (parsed), IPv4-mapped
// addresses unmapped.
func TestRemoteAddr(t *testing.T) {
	for _, c := range []struct {
		ra   net.Addr
		want string
	}{
		{&net.TCPAddr{IP: net.ParseIP("127.0.0.2"), Port: 5}, "127.0.0.2"}, // 16-byte form
		{&net.TCPAddr{IP: net.IPv4(192, 0, 2, 1).To4(), Port: 5}, "192.0.2.1"},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8::1"), Port: 5}, "2001:db8::1"},
		{strAddr("[::ffff:192.0.2.9]:80"), "192.0.2.9"},
		{strAddr("[2001:db8::2]:80"), "2001:db8::2"},
		{strAddr("not an address"), "invalid IP"},
		{nil, "invalid IP"},
	} {
		if got := remoteAddr(addrConn{ra: c.ra}).String(); got != c.want {
			t.Errorf("%v: %s, want %s", c.ra, got, c.want)
		}
	}
}

// connectTunnel opens a CONNECT tunnel through addr to origin, its head
// in one write (served on the worker, see serveConnect).
func connectTunnel(t testing.TB, addr, origin string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte("CONNECT " + origin + " HTTP/1.1\r\nHost: " + origin + "\r\n\r\n"))
	want := "HTTP/1.1 200 Connection established\r\n\r\n"
	b := make([]byte, len(want))
	if _, err := io.ReadFull(c, b); err != nil || string(b) != want {
		t.Fatalf("CONNECT: %q, %v", b, err)
	}
	return c
}

// TestTunnelDirectionOnWorker: the worker that served a tunnel's
// handshake (SOCKS5 or CONNECT) carries its client→origin direction once
// the handler has returned, rather than a new goroutine: a goroutine
// dump shows the direction under the worker while the tunnel is young
// (it parks after 100 ms without bytes). Each attempt is a new tunnel,
// dumped a few times at once after its handshake; a loaded machine may
// let one park first.
func TestTunnelDirectionOnWorker(t *testing.T) {
	origin := echoOrigin(t)
	r := startRun(t, "")
	onWorker := func() bool {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		for g := range strings.SplitSeq(string(buf), "\n\n") {
			if strings.Contains(g, "server.(*Server).work(") && strings.Contains(g, "relay.(*splicer).runUp(") {
				return true
			}
		}
		return false
	}
	for _, kind := range []string{"socks5", "connect"} {
		found := false
		for attempt := 0; attempt < 50 && !found; attempt++ {
			var c net.Conn
			if kind == "socks5" {
				c = socks5Tunnel(t, r.addr, origin)
			} else {
				c = connectTunnel(t, r.addr, origin)
			}
			if _, err := c.Write([]byte("ping\n")); err != nil {
				t.Fatal(err)
			}
			for range 5 {
				if found = onWorker(); found {
					break
				}
				runtime.Gosched()
			}
			var b [5]byte
			if _, err := io.ReadFull(c, b[:]); err != nil || string(b[:]) != "ping\n" {
				t.Fatalf("%s: echo %q, %v", kind, b, err)
			}
			c.Close()
			waitFor(t, "the tunnel to end", func() bool { return r.open() == 0 })
		}
		if !found {
			t.Errorf("%s: no worker goroutine ran the tunnel's client→origin direction", kind)
		}
	}
}
