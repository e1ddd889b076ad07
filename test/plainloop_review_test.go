package test

import (
	"strings"
	"testing"
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
