package relay

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestHalfCloseFailureIsAnError: the user half-closes while the server,
// which has reset its connection, can no longer be told of the end (the
// proxy's CloseWrite on the origin socket fails with ENOTCONN). The splice
// must fail with the direction's error and reset the user, not end as if
// both sides had finished cleanly.
func TestHalfCloseFailureIsAnError(t *testing.T) {
	f := start(t, t.Context(), time.Minute, nil)
	// Flood the user, who does not read, until nothing moves: the
	// origin→client direction then waits to write to the client and does
	// not read the origin socket, so it cannot notice the reset first.
	chunk := make([]byte, 64<<10)
	stuck := false
	for range 2048 { // at most 128 MiB
		f.server.SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
		if _, err := f.server.Write(chunk); err != nil {
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatal(err)
			}
			stuck = true
			break
		}
	}
	if !stuck {
		t.Fatal("128 MiB went through to a user who does not read")
	}
	f.server.SetLinger(0)
	f.server.Close() // RST: the proxy's origin socket is no longer connected
	if err := f.user.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	r := f.wait(t)
	var de *DirError
	if !errors.As(r.err, &de) || de.Dir != dirUp || !errors.Is(r.err, syscall.ENOTCONN) {
		t.Errorf("err = %v, want the client→origin half-close's ENOTCONN", r.err)
	}
	f.user.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(f.user); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("user read after the origin's reset: %v, want a reset", err)
	}
}

// TestCancelAfterBothEOFs: ctx ends after both directions reached EOF but
// before the splice closed its conns (a shutdown racing the tunnel's last
// moments). The tunnel is complete: the user, who has not read yet, must
// still get every byte that waits in the proxy's send buffer and then a
// FIN, and the result must be nil, not the cancellation.
func TestCancelAfterBothEOFs(t *testing.T) {
	user, client := tcpPair(t)
	origin, server := tcpPair(t)
	// The down bytes wait in the client socket's send buffer: the user's
	// receive buffer is small and the user reads only after the cancel.
	if err := user.SetReadBuffer(16 << 10); err != nil {
		t.Fatal(err)
	}
	if err := client.SetWriteBuffer(1 << 20); err != nil {
		t.Fatal(err)
	}
	down := bytes.Repeat([]byte("0123456789abcdef"), 100_000/16)
	up := []byte("request")

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	sp := newSplicer(ctx, client, origin, time.Minute)
	go func() { server.Write(down); server.CloseWrite() }()
	user.Write(up)
	user.CloseWrite()
	var wg sync.WaitGroup
	wg.Go(func() { sp.up.run() })
	wg.Go(func() { sp.down.run() })
	wg.Wait()
	if n := sp.eofs.Load(); n != 2 {
		t.Fatalf("%d EOFs, want 2", n)
	}
	cancel()
	for deadline := time.Now().Add(10 * time.Second); !sp.isAborted(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the cancel did not end the splice")
		}
	}
	st, err := sp.finish()
	if err != nil {
		t.Errorf("err = %v, want nil: the tunnel had finished", err)
	}
	if st != (Stats{Up: int64(len(up)), Down: int64(len(down))}) {
		t.Errorf("stats %+v", st)
	}
	user.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(user)
	if err != nil || !bytes.Equal(got, down) {
		t.Errorf("user read %d of %d bytes, then %v; want all, then EOF", len(got), len(down), err)
	}
	server.SetReadDeadline(time.Now().Add(10 * time.Second))
	if got, err := io.ReadAll(server); err != nil || !bytes.Equal(got, up) {
		t.Errorf("server read %q, then %v; want %q, then EOF", got, err, up)
	}
}

// lateReader reads its conn and then sleeps before it returns, as a
// goroutine scheduled late does: the bytes it returns were read before
// the idle deadline, and their write comes after it.
type lateReader struct {
	opaque
	delay time.Duration
}

func (l lateReader) Read(p []byte) (int, error) {
	n, err := l.Conn.Read(p)
	if n > 0 {
		time.Sleep(l.delay)
	}
	return n, err
}

// TestReadJustBeforeIdleIsNotIdle: bytes read just before the idle
// deadline, whose write then meets the destination's write deadline set
// at the start, are activity: they are delivered and the tunnel goes on.
// (The server has half-closed first, so that only this direction runs.)
func TestReadJustBeforeIdleIsNotIdle(t *testing.T) {
	const idle = time.Second
	f := start(t, t.Context(), idle, func(c net.Conn) net.Conn {
		return lateReader{opaque{c}, idle + idle/2}
	})
	f.server.CloseWrite()
	f.user.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(f.user); err != nil {
		t.Fatal(err)
	}
	f.user.Write([]byte("late"))
	got := make([]byte, 4)
	f.server.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(f.server, got); err != nil {
		t.Fatalf("the bytes read before the idle deadline were not delivered: %v", err)
	}
	f.user.CloseWrite()
	if r := f.wait(t); r.err != nil || r.st.Up != 4 {
		t.Errorf("result %+v, want no error and 4 bytes up", r)
	}
}
