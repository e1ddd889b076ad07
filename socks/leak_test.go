package socks

import (
	"context"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestVanishingClients leaves no goroutine behind after clients that hang
// up at every stage of the handshake, and after Close ends a live tunnel.
func TestVanishingClients(t *testing.T) {
	echo := echoServer(t, "tcp", "127.0.0.1:0")
	before := goleak.IgnoreCurrent() // the echo origin's accept loop
	srv := &Server{Policy: allowAll, Auth: staticAuth{"alice", "s3cret"}, UDP: true}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	addr := ln.Addr().String()

	stages := [][]byte{
		nil,
		{5},
		{5, 2},
		greet(2),
		cat(greet(2), []byte{1, 5, 'a'}),
		cat(greet(2), userPass("alice", "s3cret")),
		cat(greet(2), userPass("alice", "s3cret"), []byte{5, 1, 0, 3, 20, 'x'}),
		{4, 1, 0, 80, 127, 0, 0, 1, 'u', 's'},
	}
	for _, b := range stages {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Write(b)
		c.Close()
	}
	// A live tunnel and a live UDP association, ended by Close.
	tunnel := dialRaw(t, addr)
	tunnel.Write(cat(greet(2), userPass("alice", "s3cret"), req5(cmdConnect, "127.0.0.1", mustPort(t, echo))))
	if got := readN(t, tunnel, 2+2+10); got[3] != 0 {
		t.Fatalf("connect reply % x", got)
	}
	assoc := dialRaw(t, addr)
	assoc.Write(cat(greet(2), userPass("alice", "s3cret"), req5(cmdUDPAssociate, "0.0.0.0", 0)))
	if got := readN(t, assoc, 2+2+10); got[3] != 0 {
		t.Fatalf("associate reply % x", got)
	}

	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Errorf("Serve = %v after Close", err)
	}
	// A tunnel cut by Close is reset, so that the client cannot take it
	// for one that ended.
	if _, err := tunnel.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("tunnel read after Close = %v, want a reset", err)
	}
	goleak.VerifyNone(t, before)
	if got := srv.Stats().Conns; got != int64(len(stages)+2) {
		t.Errorf("Conns = %d, want %d", got, len(stages)+2)
	}
}

// TestHandshakeTimeout closes a client that sends nothing.
func TestHandshakeTimeout(t *testing.T) {
	addr := start(t, &Server{Policy: allowAll, HandshakeTimeout: 20 * time.Millisecond})
	for _, b := range [][]byte{nil, {5, 1}} {
		c := dialRaw(t, addr)
		c.Write(b)
		if _, err := c.Read(make([]byte, 1)); !isClosed(err) {
			t.Errorf("read = %v, want EOF once the handshake timed out", err)
		}
	}
}

// TestServeConnContext checks that ServeConn returns when its context ends,
// and closes a connection handed to a closed server.
func TestServeConnContext(t *testing.T) {
	srv := &Server{Policy: allowAll}
	ctx, cancel := context.WithCancel(context.Background())
	a, b := tcpPair(t)
	returned := make(chan struct{})
	go func() { srv.ServeConn(ctx, a); close(returned) }()
	cancel()
	<-returned
	if _, err := b.Read(make([]byte, 1)); !isClosed(err) {
		t.Errorf("read = %v, want EOF after the context ended", err)
	}
	srv.Close()
	a2, b2 := tcpPair(t)
	srv.ServeConn(context.Background(), a2)
	if _, err := b2.Read(make([]byte, 1)); !isClosed(err) {
		t.Errorf("read = %v, want EOF from a closed server", err)
	}
}

func tcpPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	b := dialRaw(t, ln.Addr().String())
	a, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a, b
}

func mustPort(t *testing.T, addr string) uint16 {
	t.Helper()
	ap, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return uint16(ap.Port)
}

func readN(t *testing.T, c net.Conn, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatalf("read: %v (got % x)", err, b)
	}
	return b
}

// TestServeConnHandshakeEnds checks that a connection still in its
// handshake ends when the server is closed, under the context shared by
// the connections of one parent as under any other parent, and that one
// connection's end does not end the others sharing its parent's context.
func TestServeConnHandshakeEnds(t *testing.T) {
	srv := &Server{Policy: allowAll}
	parent, other := context.Background(), context.WithValue(context.Background(), struct{}{}, 1)
	// One connection that ends first, under the shared parent.
	a0, b0 := tcpPair(t)
	first := make(chan struct{})
	go func() { srv.ServeConn(parent, a0); close(first) }()
	b0.Close()
	<-first
	var bs []net.Conn
	returned := make(chan struct{}, 3)
	for _, ctx := range []context.Context{parent, parent, other} {
		a, b := tcpPair(t)
		bs = append(bs, b)
		go func() { srv.ServeConn(ctx, a); returned <- struct{}{} }()
	}
	// Each is in its handshake: a greeting gets its method reply.
	for _, b := range bs {
		b.Write([]byte{socks5Version, 1, methodNoAuth})
		if got := readN(t, b, 2); got[1] != methodNoAuth {
			t.Fatalf("method reply % x", got)
		}
	}
	srv.Close()
	for range bs {
		<-returned
	}
	for i, b := range bs {
		if _, err := b.Read(make([]byte, 1)); !isClosed(err) {
			t.Errorf("conn %d: read = %v, want EOF once the server closed", i, err)
		}
	}
}
