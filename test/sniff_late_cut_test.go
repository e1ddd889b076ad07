package test

import (
	"errors"
	"io"
	"net"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestSniffLateBlockResetsOrigin: a tunnel whose client waits past the
// sniff's wait (1 s) is dialed first and sniffed late; when its first
// bytes then name a blocked host, the origin's connection is cut with a
// RST, as any cut tunnel's is, not closed with a FIN that says the client
// finished. The origin reads nothing of the blocked request; its read ends
// with ECONNRESET rather than EOF, as the client's does. Through CONNECT
// and SOCKS5.
func TestSniffLateBlockResetsOrigin(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	p := startSluice(t, sniffConfig, nil)
	for _, tc := range []struct {
		name string
		open func(*testing.T, string, string) net.Conn
	}{{"CONNECT", connectTunnel}, {"SOCKS5", socks5Tunnel}} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.open(t, p.addr, ln.Addr().String())
			defer c.Close()
			ln.(*net.TCPListener).SetDeadline(time.Now().Add(10 * time.Second))
			o, err := ln.Accept()
			if err != nil {
				t.Fatalf("the tunnel was not dialed: %v", err)
			}
			defer o.Close()
			time.Sleep(1500 * time.Millisecond) // past the sniff's wait: sniffed late
			io.WriteString(c, "GET /x HTTP/1.1\r\nHost: blocked.test\r\n\r\n")
			o.SetReadDeadline(time.Now().Add(10 * time.Second))
			b, err := io.ReadAll(o)
			if len(b) != 0 {
				t.Fatalf("the origin read %q of a blocked request", b)
			}
			if !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("the origin's side of a tunnel blocked late ended with %v, want a reset (ECONNRESET)", err)
			}
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if b, err := io.ReadAll(c); len(b) != 0 || !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("the client's side of a tunnel blocked late: read %q, %v; want nothing and a reset", b, err)
			}
		})
	}
	waitAccess(t, p, map[string]string{"proto": "http", "verdict": "block", "reason": "sniffed", "sniff": "http", "sniffed": "blocked.test"})
	waitAccess(t, p, map[string]string{"proto": "socks5", "verdict": "block", "reason": "sniffed", "sniff": "http", "sniffed": "blocked.test"})
}

// TestSniffBlockResetsClient: a tunnel blocked by its first bytes, sniffed
// at once, after the client was told the tunnel is established, is cut
// with a RST on the client's side (it must not look as if the origin
// ended it cleanly), through CONNECT and SOCKS5; the origin is never
// dialed.
func TestSniffBlockResetsClient(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var accepts atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepts.Add(1)
			c.Close()
		}
	}()
	p := startSluice(t, sniffConfig, nil)
	for _, tc := range []struct {
		name string
		open func(*testing.T, string, string) net.Conn
	}{{"CONNECT", connectTunnel}, {"SOCKS5", socks5Tunnel}} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.open(t, p.addr, ln.Addr().String())
			defer c.Close()
			io.WriteString(c, "GET /x HTTP/1.1\r\nHost: blocked.test\r\n\r\n")
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if b, err := io.ReadAll(c); len(b) != 0 || !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("the client's side of a blocked tunnel: read %q, %v; want nothing and a reset", b, err)
			}
		})
	}
	if n := accepts.Load(); n != 0 {
		t.Fatalf("the origin was dialed %d times for blocked tunnels", n)
	}
}
