package test

import (
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Review of the requests served on the accepting worker (the CONNECT and
// plain GET/HEAD fast paths): each test holds one of them to what
// net/http's server does with the same bytes.

// TestConnectFoldedHostRefused: a CONNECT whose Host header continues on
// an obs-fold line is answered 400 (net/http's server checks the joined
// value, "x y", and refuses it), even when its head comes whole in the
// first read, and no tunnel reaches the origin (counted TCP accepts).
func TestConnectFoldedHostRefused(t *testing.T) {
	o := newCountOrigin(t, "127.0.0.1:0")
	p := startSluice(t, "default: allow\n", nil)
	for _, fold := range []string{" y", "\ty", " " + o.addr} {
		out := rawExchange(t, p.addr, "CONNECT "+o.addr+" HTTP/1.1\r\nHost: "+o.addr+"\r\n"+fold+"\r\n\r\n")
		if want := "HTTP/1.1 400 Bad Request: malformed Host header\r\n"; !strings.HasPrefix(out, want) {
			t.Errorf("fold %q: got %q, want %q", fold, out, want)
		}
	}
	if n := o.accepts.Load(); n != 0 {
		t.Errorf("the origin accepted %d connections, want 0", n)
	}
}

// TestCutAnswerNeverLooksComplete: an origin's answer cut short reaches
// the client as a cut, never as a complete answer. An HTTP/1.0 client's
// answer has no length and no chunks (its end is the connection's end):
// the proxy must reset the connection, not close it cleanly, whether the
// worker (the head in one read) or net/http's server (the head in two
// reads) served the request; curl --http1.0 fails as it does directly.
// An HTTP/1.1 client's chunked answer lacks its last chunk.
func TestCutAnswerNeverLooksComplete(t *testing.T) {
	origin := cutOrigin(t, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "5\r\nabcde\r\n")
	o, accepts := "127.0.0.1:"+origin.port, &origin.accepts
	p := startSluice(t, "default: allow\n", nil)
	for _, tc := range []struct{ name, head string }{
		{"HTTP/1.0", "GET http://" + o + "/a HTTP/1.0\r\n\r\n"},
		{"HTTP/1.0 keep-alive", "GET http://" + o + "/a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"},
		{"HTTP/1.1", "GET http://" + o + "/a HTTP/1.1\r\nHost: x\r\n\r\n"},
	} {
		for _, split := range []bool{false, true} {
			before := accepts.Load()
			c, err := net.Dial("tcp", p.addr)
			if err != nil {
				t.Fatal(err)
			}
			c.SetDeadline(time.Now().Add(20 * time.Second))
			head := tc.head
			if split { // the head not whole in the first read: net/http's server serves it
				io.WriteString(c, head[:5])
				time.Sleep(50 * time.Millisecond)
				head = head[5:]
			}
			io.WriteString(c, head)
			out, err := io.ReadAll(c)
			c.Close()
			if accepts.Load() != before+1 {
				t.Fatalf("%s (split %v): the origin was not asked", tc.name, split)
			}
			if strings.HasPrefix(tc.head, "GET http://"+o+"/a HTTP/1.0") {
				if !errors.Is(err, syscall.ECONNRESET) {
					t.Errorf("%s (split %v): got %q and %v, want a reset: a clean end makes the cut answer look complete", tc.name, split, out, err)
				}
				continue
			}
			if !strings.HasPrefix(string(out), "HTTP/1.1 200 OK\r\n") || !strings.Contains(string(out), "5\r\nabcde\r\n") || strings.Contains(string(out), "0\r\n\r\n") {
				t.Errorf("%s (split %v): got %q, %v: want the chunk and no last chunk", tc.name, split, out, err)
			}
		}
	}
	// A real HTTP/1.0 client, directly and through the proxy.
	_, direct := curl(t, "--http1.0", "http://"+o+"/")
	out, code := curl(t, "--http1.0", "-x", "http://"+p.addr, "http://"+o+"/")
	if direct == 0 || code == 0 {
		t.Errorf("curl --http1.0: exit %d directly, %d through the proxy (0: the cut answer looked complete):\n%s", direct, code, out)
	}
}
