package relay

import (
	"context"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// inlineConn is a client conn whose server takes a direction of its
// tunnel (Inliner) when accept is set, as a worker does.
type inlineConn struct {
	net.Conn
	accept bool
	calls  atomic.Int32
	run    chan func()
}

func (c *inlineConn) Inline(run func()) bool {
	c.calls.Add(1)
	if !c.accept {
		return false
	}
	c.run <- run
	return true
}

func (c *inlineConn) Unwrap() (net.Conn, []byte) { return c.Conn, nil }

// TestStartInline: a Start whose client conn (under a WithPrefix) is an
// Inliner leaves the client→origin direction to it: no byte goes up
// until the Inliner runs it, while the other direction runs at once; run
// on the Inliner's goroutine, the tunnel carries both ways, half-closes
// and ends once, as with two goroutines. An Inliner that declines gets
// the direction started by Start.
func TestStartInline(t *testing.T) {
	for _, accept := range []bool{true, false} {
		user, client := tcpPair(t)
		origin, server := tcpPair(t)
		ic := &inlineConn{Conn: client, accept: accept, run: make(chan func(), 1)}
		done := make(chan result, 2)
		Start(context.Background(), WithPrefix(ic, []byte("head ")), origin, 0, func(st Stats, err error) { done <- result{st, err} })
		if n := ic.calls.Load(); n != 1 {
			t.Fatalf("accept %v: Inline called %d times, want 1", accept, n)
		}
		if _, err := server.Write([]byte("down")); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 4)
		user.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(user, b); err != nil || string(b) != "down" {
			t.Fatalf("accept %v: origin→client gave %q, %v", accept, b, err)
		}
		if _, err := user.Write([]byte("up")); err != nil {
			t.Fatal(err)
		}
		if accept {
			// Nothing went up: the direction waits for its runner.
			server.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			if n, err := server.Read(b); n != 0 || err == nil {
				t.Fatalf("client→origin moved %q before the Inliner ran it", b[:n])
			}
			go (<-ic.run)()
		}
		server.SetReadDeadline(time.Now().Add(10 * time.Second))
		want := "head up"
		got := make([]byte, len(want))
		if _, err := io.ReadFull(server, got); err != nil || string(got) != want {
			t.Fatalf("accept %v: client→origin gave %q, %v", accept, got, err)
		}
		user.CloseWrite()
		if _, err := server.Read(b); err != io.EOF {
			t.Fatalf("accept %v: origin saw %v, want EOF", accept, err)
		}
		server.Close()
		if _, err := user.Read(b); err != io.EOF {
			t.Fatalf("accept %v: client saw %v, want EOF", accept, err)
		}
		var r result
		select {
		case r = <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("accept %v: the tunnel did not end", accept)
		}
		if r.err != nil || r.st.Up != int64(len(want)) || r.st.Down != 4 {
			t.Errorf("accept %v: %+v, %v", accept, r.st, r.err)
		}
		select {
		case r := <-done:
			t.Errorf("accept %v: done called twice (%+v)", accept, r)
		case <-time.After(20 * time.Millisecond):
		}
		user.Close()
	}
}
