package test

import (
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"
)

// newSilentOrigin listens on loopback; each connection it accepts gets
// back the bytes of its first read (openIdleTunnel's exchange), then the
// origin says nothing more and hands the connection to the test.
func newSilentOrigin(t *testing.T) (string, <-chan *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	accepted := make(chan *net.TCPConn, 256)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				c.SetDeadline(time.Now().Add(60 * time.Second))
				buf := make([]byte, 256)
				n, _ := c.Read(buf)
				c.Write(buf[:n])
				accepted <- c.(*net.TCPConn)
			}()
		}
	}()
	return ln.Addr().String(), accepted
}

// resetErr reports whether err is what a socket reset by its peer gives.
func resetErr(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// TestGraceEndCutsParkedTunnels: tunnels idle long enough to be parked,
// half of them half-closed by their client (so only the origin's side is
// parked), CONNECT and SOCKS5, are still open when shutdown_grace ends:
// every client and every origin connection is reset (not closed with a FIN
// that would make them look complete), every tunnel writes its access line
// before the process exits, and it exits 0.
func TestGraceEndCutsParkedTunnels(t *testing.T) {
	const perKind = 20
	addr, accepted := newSilentOrigin(t)
	p := startSluice(t, idleConfig+"shutdown_grace: 1s\n", nil)
	type tunnel struct {
		client, origin *net.TCPConn
		halfClosed     bool
	}
	var tus []tunnel
	for _, kind := range []string{"connect", "socks5"} {
		for i := range perKind {
			c := openIdleTunnel(t, p.addr, addr, kind).(*net.TCPConn)
			defer c.Close()
			var o *net.TCPConn
			select {
			case o = <-accepted:
			case <-time.After(10 * time.Second):
				t.Fatal("the origin was not dialed")
			}
			defer o.Close()
			tu := tunnel{client: c, origin: o, halfClosed: i%2 == 1}
			if tu.halfClosed {
				c.CloseWrite()
				o.SetReadDeadline(time.Now().Add(30 * time.Second))
				if n, err := o.Read(make([]byte, 1)); n != 0 || err != io.EOF {
					t.Fatalf("the origin read %d, %v; want the client's EOF", n, err)
				}
			}
			tus = append(tus, tu)
		}
	}
	time.Sleep(300 * time.Millisecond) // idle beyond the relay's 100 ms: parked
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitExit(t, p)
	p.waitLog(t, `grace period over`)
	if n := strings.Count(p.Log(), `"msg":"access"`); n != 2*perKind {
		t.Errorf("%d access lines, want %d", n, 2*perKind)
	}
	for i, tu := range tus {
		tu.client.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := tu.client.Read(make([]byte, 1)); !resetErr(err) {
			t.Errorf("tunnel %d (half-closed %v): the client read %v, want a reset", i, tu.halfClosed, err)
		}
		// After a reset the origin's write fails at once; after a FIN it
		// would succeed.
		tu.origin.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, err := tu.origin.Write([]byte("late")); !resetErr(err) {
			t.Errorf("tunnel %d (half-closed %v): the origin's write %v, want the error of a reset", i, tu.halfClosed, err)
		}
	}
}
