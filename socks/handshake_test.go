package socks

import (
	"context"
	"io"
	"net"
	"sync/atomic"
	"testing"
)

// TestPipelinedData sends the whole handshake and the first payload in
// one write, as optimistic clients do: the handshake is read through a
// buffer, and what it read past the request must still reach the origin,
// once and in order, for SOCKS5 (with and without a password) and
// SOCKS4a.
func TestPipelinedData(t *testing.T) {
	echo := echoServer(t, "tcp", "127.0.0.1:0")
	port := mustPort(t, echo)
	payload := []byte("GET / HTTP/1.1\r\nHost: pipelined.test\r\n\r\n")
	for _, tc := range []struct {
		name  string
		srv   *Server
		send  []byte
		reply int // bytes of replies before the echo
	}{
		{"socks5", &Server{Policy: allowAll}, cat(greet(0), req5(cmdConnect, "127.0.0.1", port), payload), 2 + 10},
		{"socks5 password", &Server{Policy: allowAll, Auth: staticAuth{"u", "p"}},
			cat(greet(2), userPass("u", "p"), req5(cmdConnect, "127.0.0.1", port), payload), 2 + 2 + 10},
		{"socks4a", &Server{Policy: allowAll}, cat(req4(cmdConnect, [4]byte{0, 0, 0, 1}, port, "someone", "127.0.0.1"), payload), 8},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, start(t, tc.srv))
			if _, err := c.Write(tc.send); err != nil {
				t.Fatal(err)
			}
			replies := readN(t, c, tc.reply)
			if got := readN(t, c, len(payload)); string(got) != string(payload) {
				t.Errorf("echo = %q (replies % x), want %q", got, replies, payload)
			}
			closeWrite(t, c)
			if rest := readUntilClose(c); len(rest) != 0 {
				t.Errorf("after the payload the origin echoed %q more", rest)
			}
		})
	}
}

// countingConn counts the reads of the server's side of a connection.
type countingConn struct {
	net.Conn
	reads atomic.Int64
}

func (c *countingConn) Read(p []byte) (int, error) {
	c.reads.Add(1)
	return c.Conn.Read(p)
}

// TestHandshakeReads counts the reads of a SOCKS5 handshake whose client
// waits for each reply: one read for the greeting and one for the request
// (byte by byte field reads took six).
func TestHandshakeReads(t *testing.T) {
	echo := echoServer(t, "tcp", "127.0.0.1:0")
	server, client := tcpPair(t)
	cc := &countingConn{Conn: server}
	var atDial atomic.Int64 // the reads before the dial: the handshake's
	srv := &Server{Policy: allowAll, Dial: func(ctx context.Context, _, network, addr string) (net.Conn, error) {
		atDial.Store(cc.reads.Load())
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}}
	t.Cleanup(func() { srv.Close() })
	done := make(chan struct{})
	go func() { defer close(done); srv.ServeConn(context.Background(), cc) }()
	client.Write(greet(0))
	readN(t, client, 2)
	client.Write(req5(cmdConnect, "127.0.0.1", mustPort(t, echo)))
	if r := readN(t, client, 10); r[1] != byte(repSucceeded) {
		t.Fatalf("reply % x", r)
	}
	if n := atDial.Load(); n != 2 {
		t.Errorf("the handshake took %d reads, want 2", n)
	}
	client.Close()
	<-done
}

// BenchmarkConnect is one SOCKS5 connection through a loopback server:
// greeting, request, decision, dial, one echoed byte, close. Allocations
// per op include the client's and the echo origin's.
func BenchmarkConnect(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	srv := &Server{Policy: allowAll}
	pl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(pl)
	defer srv.Close()
	hello := cat(greet(0), req5(cmdConnect, "127.0.0.1", port))
	buf := make([]byte, 2+10+1)
	b.ReportAllocs()
	for b.Loop() {
		c, err := net.Dial("tcp", pl.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		c.Write(hello)
		c.Write([]byte{'x'})
		if _, err := io.ReadFull(c, buf); err != nil || buf[1] != 0 || buf[3] != 0 || buf[12] != 'x' {
			b.Fatalf("% x, %v", buf, err)
		}
		c.Close()
	}
}
