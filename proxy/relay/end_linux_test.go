package relay

import (
	"errors"
	"io"
	"os"
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
