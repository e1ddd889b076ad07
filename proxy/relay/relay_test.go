package relay

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// tcpPair returns the two ends of one loopback TCP connection.
func tcpPair(t testing.TB) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() { c, err := ln.Accept(); ch <- res{c, err} }()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { a.Close(); r.c.Close() })
	return a.(*net.TCPConn), r.c.(*net.TCPConn)
}

// fixture is a spliced path: user ⇄ [client | Splice | origin] ⇄ server.
type fixture struct {
	user, client, origin, server *net.TCPConn
	done                         chan result
}

type result struct {
	st  Stats
	err error
}

// start splices; clientConn lets a test wrap the proxy's client side.
func start(t testing.TB, ctx context.Context, idle time.Duration, wrap func(net.Conn) net.Conn) *fixture {
	t.Helper()
	f := &fixture{done: make(chan result, 1)}
	f.user, f.client = tcpPair(t)
	f.origin, f.server = tcpPair(t)
	var c net.Conn = f.client
	if wrap != nil {
		c = wrap(c)
	}
	go func() {
		st, err := Splice(ctx, c, f.origin, idle)
		f.done <- result{st, err}
	}()
	return f
}

func (f *fixture) wait(t testing.TB) result {
	t.Helper()
	select {
	case r := <-f.done:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("Splice did not return")
		return result{}
	}
}

func random(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestSpliceHalfClose sends each way, half-closes one side first and checks
// that the other direction still delivers, then the exact byte counts.
func TestSpliceHalfClose(t *testing.T) {
	for _, tc := range []struct {
		name     string
		up, down int
		userEnds bool // the user half-closes first; else the server does
	}{
		{"client first, small", 10, 20, true},
		{"server first, small", 10, 20, false},
		{"client first, large", 3 << 20, 5 << 20, true},
		{"server first, large", 5 << 20, 3 << 20, false},
		{"nothing up", 0, 1000, true},
		{"nothing down", 1000, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := start(t, t.Context(), time.Minute, nil)
			up, down := random(t, tc.up), random(t, tc.down)
			first, firstPeer, firstData := f.user, f.server, up
			second, secondPeer, secondData := f.server, f.user, down
			if !tc.userEnds {
				first, firstPeer, firstData = f.server, f.user, down
				second, secondPeer, secondData = f.user, f.server, up
			}
			// The first side sends everything and half-closes.
			go func() { first.Write(firstData); first.CloseWrite() }()
			got, err := io.ReadAll(firstPeer) // ends with the propagated EOF
			if err != nil || !bytes.Equal(got, firstData) {
				t.Fatalf("first direction: got %d bytes, err %v; want %d", len(got), err, len(firstData))
			}
			// The other direction still works after the half-close.
			go func() { second.Write(secondData); second.CloseWrite() }()
			got, err = io.ReadAll(secondPeer)
			if err != nil || !bytes.Equal(got, secondData) {
				t.Fatalf("second direction: got %d bytes, err %v; want %d", len(got), err, len(secondData))
			}
			r := f.wait(t)
			if r.err != nil {
				t.Errorf("err = %v, want nil", r.err)
			}
			if r.st != (Stats{Up: int64(tc.up), Down: int64(tc.down)}) {
				t.Errorf("stats = %+v, want up %d down %d", r.st, tc.up, tc.down)
			}
		})
	}
}

// TestSpliceBothWaysConcurrently streams both ways at once.
func TestSpliceBothWaysConcurrently(t *testing.T) {
	f := start(t, t.Context(), time.Minute, nil)
	up, down := random(t, 4<<20), random(t, 4<<20)
	go func() { f.user.Write(up); f.user.CloseWrite() }()
	go func() { f.server.Write(down); f.server.CloseWrite() }()
	var gotDown []byte
	readDone := make(chan error, 1)
	go func() {
		var err error
		gotDown, err = io.ReadAll(f.user)
		readDone <- err
	}()
	gotUp, err := io.ReadAll(f.server)
	if err != nil || !bytes.Equal(gotUp, up) {
		t.Fatalf("up: %d bytes, err %v", len(gotUp), err)
	}
	if err := <-readDone; err != nil || !bytes.Equal(gotDown, down) {
		t.Fatalf("down: %d bytes, err %v", len(gotDown), err)
	}
	if r := f.wait(t); r.err != nil || r.st.Up != int64(len(up)) || r.st.Down != int64(len(down)) {
		t.Errorf("result = %+v", r)
	}
}

func TestSpliceIdleTimeout(t *testing.T) {
	f := start(t, t.Context(), 50*time.Millisecond, nil)
	// A little traffic first: the tunnel works, then goes quiet.
	f.user.Write([]byte("ping"))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(f.server, buf); err != nil {
		t.Fatal(err)
	}
	r := f.wait(t)
	if !errors.Is(r.err, ErrIdle) {
		t.Errorf("err = %v, want ErrIdle", r.err)
	}
	if r.st.Up != 4 {
		t.Errorf("up = %d, want 4", r.st.Up)
	}
	// Both ends see the close.
	if _, err := f.user.Read(buf); err == nil {
		t.Error("user conn still open after idle timeout")
	}
	if _, err := f.server.Read(buf); err == nil {
		t.Error("server conn still open after idle timeout")
	}
}

// TestSpliceIdleAfterHalfClose: one direction ended, the other is silent.
func TestSpliceIdleAfterHalfClose(t *testing.T) {
	f := start(t, t.Context(), 50*time.Millisecond, nil)
	f.user.CloseWrite()
	if _, err := io.ReadAll(f.server); err != nil {
		t.Fatal(err)
	}
	if r := f.wait(t); !errors.Is(r.err, ErrIdle) {
		t.Errorf("err = %v, want ErrIdle", r.err)
	}
}

// TestSpliceStuckWriter: the user stops reading while the server floods it;
// the write blocks and the watchdog ends the splice.
func TestSpliceStuckWriter(t *testing.T) {
	f := start(t, t.Context(), 50*time.Millisecond, nil)
	f.user.CloseWrite()
	go func() {
		big := make([]byte, 64<<20)
		f.server.Write(big) // blocks once buffers fill; fails when closed
	}()
	if r := f.wait(t); !errors.Is(r.err, ErrIdle) {
		t.Errorf("err = %v, want ErrIdle", r.err)
	}
}

func TestSpliceContextCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	f := start(t, ctx, 0, nil)
	f.user.Write([]byte("x"))
	buf := make([]byte, 1)
	if _, err := io.ReadFull(f.server, buf); err != nil {
		t.Fatal(err)
	}
	cancel()
	r := f.wait(t)
	if !errors.Is(r.err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", r.err)
	}
	if _, err := f.server.Read(buf); err == nil {
		t.Error("server conn still open after cancel")
	}
}

// TestSplicePrefix: bytes already read by a handshake come first, in order.
func TestSplicePrefix(t *testing.T) {
	f := start(t, t.Context(), time.Minute, func(c net.Conn) net.Conn {
		return WithPrefix(WithPrefix(c, []byte("second-")), []byte("first-"))
	})
	go func() { f.user.Write([]byte("rest")); f.user.CloseWrite() }()
	got, err := io.ReadAll(f.server)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "first-second-rest" {
		t.Errorf("origin got %q", got)
	}
	f.server.CloseWrite()
	r := f.wait(t)
	if r.err != nil || r.st.Up != int64(len(got)) || r.st.Down != 0 {
		t.Errorf("result = %+v, want up %d", r, len(got))
	}
}

func TestSpliceResetIsAnError(t *testing.T) {
	f := start(t, t.Context(), 0, nil)
	f.server.SetLinger(0)
	f.server.Close() // RST
	r := f.wait(t)
	var de *DirError
	if r.err != nil && !errors.As(r.err, &de) {
		t.Errorf("err = %v, want nil or a *DirError", r.err)
	}
	buf := make([]byte, 1)
	if _, err := f.user.Read(buf); err == nil {
		t.Error("user conn still open after origin reset")
	}
}

type peeked struct {
	net.Conn
	b []byte
}

func (p *peeked) Unwrap() (net.Conn, []byte) { return p.Conn, p.b }

func TestUnwrap(t *testing.T) {
	a, _ := tcpPair(t)
	for _, tc := range []struct {
		name    string
		conn    net.Conn
		pending string
	}{
		{"raw", a, ""},
		{"prefix", WithPrefix(a, []byte("ab")), "ab"},
		{"empty prefix", WithPrefix(a, nil), ""},
		{"nested", WithPrefix(&peeked{WithPrefix(a, []byte("c")), []byte("b")}, []byte("a")), "abc"},
		{"peeking listener", &peeked{a, []byte{0x05}}, "\x05"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw, p := Unwrap(tc.conn)
			if _, ok := raw.(*net.TCPConn); !ok {
				t.Errorf("raw is %T, want *net.TCPConn", raw)
			}
			if string(p) != tc.pending {
				t.Errorf("pending = %q, want %q", p, tc.pending)
			}
		})
	}
}

func TestPrefixConnReads(t *testing.T) {
	a, b := tcpPair(t)
	c := WithPrefix(a, []byte("hello "))
	go func() { b.Write([]byte("world")); b.CloseWrite() }()
	small := make([]byte, 4) // smaller than the prefix: reads come in pieces
	var got []byte
	for range 100 {
		n, err := c.Read(small)
		got = append(got, small[:n]...)
		if err != nil {
			break
		}
	}
	if string(got) != "hello world" {
		t.Errorf("got %q", got)
	}
	if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Errorf("CloseWrite: %v", err)
	}
}
