package dial

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"testing"
)

// TestKeepAliveRefusesInvalidHeaders: a request with a header name or
// value http.Transport refuses to send (a NUL or other control byte, a
// space in a name) is refused by the pool too, before any connection is
// made: the front end's server never lets one through, but the list
// fetcher sends back an ETag it read from an origin's answer, where
// net/http's reader lets a NUL pass.
func TestKeepAliveRefusesInvalidHeaders(t *testing.T) {
	o := newScriptedOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		for {
			if _, ok := readReq(br); !ok {
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	tr, _ := directTransport(t)
	std := &http.Transport{}
	defer std.CloseIdleConnections()
	for _, h := range []http.Header{
		{"If-None-Match": {"\"a\x00b\""}},
		{"X-A": {"a\x01b"}},
		{"X A": {"b"}},
		{"X-A\x00": {"b"}},
	} {
		for _, rt := range []http.RoundTripper{std, tr} {
			req, _ := http.NewRequestWithContext(context.Background(), "GET", "http://"+o.ln.Addr().String()+"/", nil)
			req.Header = h
			resp, err := rt.RoundTrip(req)
			if err == nil {
				resp.Body.Close()
				t.Errorf("%T: header %q sent", rt, h)
			}
		}
	}
	if n := o.accepts.Load(); n != 0 {
		t.Errorf("%d connections made for requests that must not be sent", n)
	}
}
