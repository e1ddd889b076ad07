package relay

import (
	"bytes"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// countWriteDeadlines counts the write deadlines the relay sets until the
// test ends.
func countWriteDeadlines(t *testing.T) *atomic.Int64 {
	var n atomic.Int64
	orig := setWriteDeadline
	setWriteDeadline = func(c net.Conn, d time.Time) error {
		n.Add(1)
		return orig(c, d)
	}
	t.Cleanup(func() { setWriteDeadline = orig })
	return &n
}

// TestShortTunnelSetsNoWriteDeadline: a tunnel between two TCP sockets
// whose writes never block sets no write deadline (each would be a
// runtime timer per socket, set and deleted for every tunnel), with or
// without an idle timeout; it still moves every byte both ways.
func TestShortTunnelSetsNoWriteDeadline(t *testing.T) {
	n := countWriteDeadlines(t)
	for _, idle := range []time.Duration{0, time.Minute} {
		f := start(t, t.Context(), idle, nil)
		f.user.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
		b := make([]byte, 18)
		if _, err := io.ReadFull(f.server, b); err != nil {
			t.Fatal(err)
		}
		f.server.Write(bytes.Repeat([]byte{'d'}, 1024))
		f.server.CloseWrite()
		f.user.CloseWrite()
		got, err := io.ReadAll(f.user)
		if err != nil || len(got) != 1024 {
			t.Fatalf("idle %v: read %d bytes (err %v), want 1024", idle, len(got), err)
		}
		if r := f.wait(t); r.err != nil || r.st.Up != 18 || r.st.Down != 1024 {
			t.Fatalf("idle %v: %+v", idle, r)
		}
	}
	if got := n.Load(); got != 0 {
		t.Errorf("%d write deadlines set, want 0", got)
	}
}

// TestStaleWriteDeadlineReplaced: a write deadline that a handshake left
// on a destination, already passed, neither fails a tunnel without an idle
// timeout nor cuts a busy one with an idle timeout: the relay replaces it
// when a write first meets it, and a destination that reads slowly gets
// every byte.
func TestStaleWriteDeadlineReplaced(t *testing.T) {
	for _, idle := range []time.Duration{0, 5 * time.Second} {
		f := start(t, t.Context(), idle, func(c net.Conn) net.Conn {
			c.SetWriteDeadline(time.Now().Add(-time.Second))
			return c
		})
		f.origin.SetWriteDeadline(time.Now().Add(-time.Second))
		down := random(t, 8<<20)
		up := random(t, 4<<20)
		go func() {
			f.server.Write(down)
			f.server.CloseWrite()
		}()
		go func() {
			f.user.Write(up)
			f.user.CloseWrite()
		}()
		time.Sleep(50 * time.Millisecond) // both destinations' buffers fill: the writes block
		var gotUp []byte
		done := make(chan error, 1)
		go func() {
			var err error
			gotUp, err = io.ReadAll(f.server)
			done <- err
		}()
		gotDown, err := io.ReadAll(f.user)
		if err != nil || !bytes.Equal(gotDown, down) {
			t.Fatalf("idle %v: down: %d bytes (err %v), want %d", idle, len(gotDown), err, len(down))
		}
		if err := <-done; err != nil || !bytes.Equal(gotUp, up) {
			t.Fatalf("idle %v: up: %d bytes (err %v), want %d", idle, len(gotUp), err, len(up))
		}
		if r := f.wait(t); r.err != nil {
			t.Fatalf("idle %v: %v", idle, r.err)
		}
	}
}
