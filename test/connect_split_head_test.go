package test

import (
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// TestSplitHeadBoundedByHandshake: the handshake timeout bounds a whole
// request head, counted from the accept, also when the head is not whole
// in the first read and goes on to net/http's server (whose own
// ReadHeaderTimeout counts from the hand-off). With handshake: 3s, a
// client sends the first line of its head at 1.5 s and the rest at 4 s:
// the connection is closed at 3 s, and the origin is never dialed
// (accepts counted). Before, the head could take up to 1.5 s + 3 s and was
// served: a CONNECT opened its tunnel, a GET was fetched.
func TestSplitHeadBoundedByHandshake(t *testing.T) {
	o := newCountOrigin(t, "127.0.0.1:0")
	p := startSluice(t, "default: allow\ntimeouts: {handshake: 3s}\n", nil)
	origin := o.addr
	for _, tc := range []struct{ name, first, rest string }{
		{"CONNECT", "CONNECT " + origin + " HTTP/1.1\r\n", "Host: " + origin + "\r\n\r\n"},
		{"GET", "GET http://" + origin + "/ HTTP/1.1\r\n", "Host: " + origin + "\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := net.Dial("tcp", p.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			start := time.Now()
			time.Sleep(1500 * time.Millisecond)
			if _, err := io.WriteString(c, tc.first); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Until(start.Add(4 * time.Second)))
			io.WriteString(c, tc.rest) // may fail: closed at 3 s
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			got, _ := io.ReadAll(c)
			if len(got) != 0 {
				t.Errorf("a head finished 4 s after the accept (handshake: 3s) was answered %q", strings.SplitN(string(got), "\r\n", 2)[0])
			}
		})
	}
	t.Cleanup(func() {
		if n := o.accepts.Load(); n != 0 {
			t.Errorf("the origin was dialed %d times for heads past the handshake timeout", n)
		}
	})
}
