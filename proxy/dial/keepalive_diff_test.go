package dial

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// TestKeepAliveAsTransport: for answers that misbehave (framing that
// conflicts, bodies where none may be, more than announced), the pool
// gives what http.Transport gives for the first request, and the second
// request on the same origin gets its own answer, never bytes of the
// first: each case's origin answers every later request with "second".
func TestKeepAliveAsTransport(t *testing.T) {
	cases := []struct {
		name, method, first string
	}{
		{"cl-extra", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale"},
		{"head-body", "HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale"},
		{"204-body", "GET", "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nstale"},
		{"304-body", "GET", "HTTP/1.1 304 Not Modified\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale"},
		{"te-and-cl", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 30\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"},
		{"two-cl", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 7\r\n\r\nokstale"},
		{"cl-list", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok"},
		{"te-gzip", "GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"},
		{"te-upper", "GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"},
		{"chunk-ext", "GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;a=b\r\nok\r\n0\r\n\r\n"},
		{"chunk-bad", "GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nok\r\n0\r\n\r\n"},
		{"chunk-lf", "GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\nok\n0\n\n"},
		{"obs-fold", "GET", "HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n\r\nok"},
		{"bare-lf", "GET", "HTTP/1.1 200 OK\nContent-Length: 2\n\nok"},
		{"100-then", "GET", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"},
		{"103-then", "GET", "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"},
		{"101", "GET", "HTTP/1.1 101 Switching Protocols\r\n\r\nstale"},
		{"http10-ka", "GET", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok"},
		{"http10", "GET", "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"},
		{"garbage", "GET", "HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nok"},
		{"nul-header", "GET", "HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 2\r\n\r\nok"},
		{"space-name", "GET", "HTTP/1.1 200 OK\r\nX A: b\r\nContent-Length: 2\r\n\r\nok"},
		{"neg-cl", "GET", "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nok"},
		{"plus-cl", "GET", "HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok"},
	}
	type result struct {
		status int
		body   string
		err    bool
		second string
	}
	run := func(t *testing.T, tr http.RoundTripper, closeIdle func(), method, first string) result {
		o := newScriptedOrigin(t, func(i int, c net.Conn, br *bufio.Reader) {
			for n := 0; ; n++ {
				if _, ok := readReq(br); !ok {
					return
				}
				if i == 0 && n == 0 {
					io.WriteString(c, first)
					continue
				}
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond")
			}
		})
		addr := o.ln.Addr().String()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var r result
		resp, body, err := fetch(ctx, tr, method, addr, "/first")
		r.err = err != nil
		if resp != nil {
			r.status, r.body = resp.StatusCode, body
		}
		time.Sleep(20 * time.Millisecond) // late bytes arrive
		_, body, err = fetch(ctx, tr, "GET", addr, "/second")
		r.second = body
		if err != nil {
			r.second = "error: " + err.Error()
		}
		closeIdle()
		return r
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pool, router := directTransport(t)
			std := &http.Transport{DisableCompression: true, MaxResponseHeaderBytes: 1 << 20}
			got := run(t, pool, router.CloseIdleConnections, c.method, c.first)
			want := run(t, std, std.CloseIdleConnections, c.method, c.first)
			if got.second != "second" {
				t.Errorf("second request got %q", got.second)
			}
			if got.err != want.err || (!got.err && (got.status != want.status || got.body != want.body)) {
				t.Errorf("pool: %+v; http.Transport: %+v", got, want)
			}
		})
	}
}

// TestKeepAliveNoReuseAfterDoubtfulFraming: an answer with both
// Transfer-Encoding and Content-Length, or with Transfer-Encoding in
// HTTP/1.0, is relayed as net/http reads it, but its connection is not
// reused (RFC 9112 6.1, 6.3; Squid closes it): another parser on the
// way may have framed it otherwise. A plain chunked answer's is reused.
func TestKeepAliveNoReuseAfterDoubtfulFraming(t *testing.T) {
	for _, c := range []struct {
		name, first string
		accepts     int64
	}{
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", 1},
		{"te-and-cl", "HTTP/1.1 200 OK\r\nContent-Length: 12\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", 2},
		{"cl-and-te", "HTTP/1.1 200 OK\r\ncontent-length: 12\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", 2},
		{"http10-te", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\nok", 2},
		{"http10-ka", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok", 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			o := newScriptedOrigin(t, func(i int, conn net.Conn, br *bufio.Reader) {
				for n := 0; ; n++ {
					if _, ok := readReq(br); !ok {
						return
					}
					if i == 0 && n == 0 {
						io.WriteString(conn, c.first)
						continue
					}
					io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond")
				}
			})
			tr, r := directTransport(t)
			addr := o.ln.Addr().String()
			if _, body, err := fetch(context.Background(), tr, "GET", addr, "/"); err != nil || body != "ok" {
				t.Fatalf("first: %q, %v", body, err)
			}
			if _, body, err := fetch(context.Background(), tr, "GET", addr, "/"); err != nil || body != "second" {
				t.Fatalf("second: %q, %v", body, err)
			}
			r.CloseIdleConnections()
			if n := o.accepts.Load(); n != c.accepts {
				t.Errorf("%d connections, want %d", n, c.accepts)
			}
		})
	}
}
