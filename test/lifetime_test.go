package test

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// endlessOrigin sends every connection it accepts a KiB every 10 ms, for
// at most a minute, and reports how each connection ended: the error
// of its first failed read or write (io.EOF after a FIN).
type endlessOrigin struct {
	port int
	ends chan error
}

func newEndlessOrigin(t *testing.T) *endlessOrigin {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o := &endlessOrigin{port: ln.Addr().(*net.TCPAddr).Port, ends: make(chan error, 16)}
	done := make(chan struct{})
	t.Cleanup(func() { close(done); ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			// One goroutine writes and reads in turn: a concurrent
			// write could take the reset's error from the read.
			go func() {
				defer c.Close()
				chunk, buf := make([]byte, 1024), make([]byte, 1024)
				for range 6000 { // a minute at most
					if _, err := c.Write(chunk); err != nil {
						o.ends <- err
						return
					}
					c.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
					if _, err := c.Read(buf); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
						o.ends <- err
						return
					}
					select {
					case <-done:
						return
					default:
					}
				}
			}()
		}
	}()
	return o
}

// TestLifetimeCutsWithReset: timeouts.lifetime cuts a download that would
// never end. The client must see a reset, not an EOF that makes the cut
// transfer look complete, through an HTTP CONNECT tunnel and a SOCKS5 one;
// the origin is reset too.
func TestLifetimeCutsWithReset(t *testing.T) {
	o := newEndlessOrigin(t)
	p := startSluice(t, "timeouts: {lifetime: 2s}\n", nil)
	target := "127.0.0.1:" + strconv.Itoa(o.port)
	for _, kind := range []string{"connect", "socks5"} {
		t.Run(kind, func(t *testing.T) {
			var c *net.TCPConn
			var br io.Reader
			if kind == "connect" {
				c, br = httpConnectBuf(t, p.addr, target)
			} else {
				c, br = socks5ConnectBuf(t, p.addr, "127.0.0.1", o.port)
			}
			c.SetDeadline(time.Now().Add(30 * time.Second))
			// Binary, so that sniffing lets it pass (and dials) at once.
			if _, err := c.Write([]byte("\x00\x01 download")); err != nil {
				t.Fatal(err)
			}
			n, err := io.Copy(io.Discard, br)
			if n == 0 {
				t.Errorf("nothing came down before the cut (%v)", err)
			}
			if !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("the client's download ended with %v after %d bytes, want a reset", err, n)
			}
			select {
			case err := <-o.ends:
				if !errors.Is(err, syscall.ECONNRESET) {
					t.Errorf("the origin's connection ended with %v, want a reset\n%s", err, p.Log())
				}
			case <-time.After(10 * time.Second):
				t.Error("the origin's connection was not closed")
			}
		})
	}
}

func httpConnectBuf(t *testing.T, proxy, target string) (*net.TCPConn, io.Reader) {
	c, br := httpConnect(t, proxy, target)
	return c, br
}

func socks5ConnectBuf(t *testing.T, proxy, host string, port int) (*net.TCPConn, io.Reader) {
	c, br := socks5Connect(t, proxy, host, port)
	return c, br
}

// TestGraceEndCutsWithReset: at the end of shutdown_grace, a plain HTTP
// download still in flight (a body that ends with the connection) is cut
// with a reset: a client reading to the close must not take it for the
// whole body.
func TestGraceEndCutsWithReset(t *testing.T) {
	o := newRawOrigin(t, func(c net.Conn, _ *bufio.Reader, _ string) {
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n")
		chunk := make([]byte, 1024)
		for range 2500 { // 25 s at most
			if _, err := c.Write(chunk); err != nil {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
	p := startSluice(t, "shutdown_grace: 1s\n", nil)
	c, err := net.DialTimeout("tcp", p.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	target := "127.0.0.1:" + o.port
	io.WriteString(c, "GET http://"+target+"/endless HTTP/1.0\r\nHost: "+target+"\r\n\r\n")
	br := bufio.NewReader(c)
	if _, err := br.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(br, make([]byte, 4096)); err != nil {
		t.Fatalf("the download did not start: %v", err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, br)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("the download ended with %v after %d more bytes, want a reset at the end of the grace period", err, n)
	}
}

// TestLifetimeCutsIdleTunnel: timeouts.lifetime cuts a tunnel that has
// been idle long enough for the relay to park it (no goroutine waits on
// its sockets): the client sees a reset, the origin's connection is
// closed, and the tunnel's access line is written.
func TestLifetimeCutsIdleTunnel(t *testing.T) {
	echo := newTCPEcho(t)
	p := startSluice(t, idleConfig+"timeouts: {lifetime: 2s}\n", nil)
	for _, kind := range []string{"connect", "socks5"} {
		t.Run(kind, func(t *testing.T) {
			before := strings.Count(p.Log(), `"msg":"access"`)
			c := openIdleTunnel(t, p.addr, echo.addr, kind)
			defer c.Close()
			c.SetReadDeadline(time.Now().Add(30 * time.Second))
			if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("the idle tunnel ended with %v, want a reset", err)
			}
			eventually(t, "the origin's connection closes", func() bool { return echo.open.Load() == 0 })
			eventually(t, "the tunnel's access line", func() bool { return strings.Count(p.Log(), `"msg":"access"`) > before })
		})
	}
}

// TestLifetimeCutsHalfClosedTunnel: the client has half-closed its side of
// a tunnel (it sent its request and waits for the answer), and the origin
// stays silent until timeouts.lifetime cuts the client: the one direction
// left is parked on the origin's socket, which nobody closed. The tunnel
// must still end at once: the origin's connection reset, the access line
// written; not left until the idle timeout (here the default, minutes).
func TestLifetimeCutsHalfClosedTunnel(t *testing.T) {
	addr, accepted := newSilentOrigin(t)
	p := startSluice(t, idleConfig+"timeouts: {lifetime: 2s}\n", nil)
	for _, kind := range []string{"connect", "socks5"} {
		t.Run(kind, func(t *testing.T) {
			before := strings.Count(p.Log(), `"msg":"access"`)
			c := openIdleTunnel(t, p.addr, addr, kind).(*net.TCPConn)
			defer c.Close()
			var o *net.TCPConn
			select {
			case o = <-accepted:
			case <-time.After(10 * time.Second):
				t.Fatal("the origin was not dialed")
			}
			defer o.Close()
			c.CloseWrite()
			o.SetDeadline(time.Now().Add(30 * time.Second))
			if n, err := o.Read(make([]byte, 1)); n != 0 || err != io.EOF {
				t.Fatalf("the origin read %d, %v; want the client's EOF", n, err)
			}
			c.SetReadDeadline(time.Now().Add(30 * time.Second))
			if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("the client's tunnel ended with %v, want a reset", err)
			}
			eventually(t, "the tunnel's access line", func() bool { return strings.Count(p.Log(), `"msg":"access"`) > before })
			// The origin read the EOF (CLOSE_WAIT): after a reset its write
			// fails at once; after a FIN it would succeed.
			if _, err := o.Write([]byte("late")); !errors.Is(err, syscall.EPIPE) && !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("the origin's write after the cut: %v, want the error of a reset", err)
			}
		})
	}
}
