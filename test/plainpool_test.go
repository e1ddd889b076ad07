package test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// poolOrigin is a raw loopback origin that counts the TCP connections it
// accepts and answers each request with its number; with closeAfter it
// closes every connection after one answer without saying so (no
// "Connection: close"), as an origin whose keep-alive timeout is shorter
// than the proxy's does.
type poolOrigin struct {
	ln      net.Listener
	accepts atomic.Int64
	served  atomic.Int64
	wg      sync.WaitGroup
}

func newPoolOrigin(t *testing.T, closeAfter bool) *poolOrigin {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o := &poolOrigin{ln: ln}
	o.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			o.accepts.Add(1)
			o.wg.Go(func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(30 * time.Second))
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					io.Copy(io.Discard, req.Body)
					body := fmt.Sprintf("answer %d to %s %s", o.served.Add(1), req.Method, req.URL.Path)
					if req.Method == http.MethodHead {
						fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", len(body))
					} else {
						fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
					}
					if closeAfter {
						return
					}
				}
			})
		}
	})
	t.Cleanup(func() { ln.Close(); o.wg.Wait() })
	return o
}

// TestPlainKeepAlivePool drives the binary with curl, several URLs on one
// client connection: requests to an origin that keeps its connections
// alive share one origin connection; requests to an origin that closes
// each connection after one answer all succeed, each on a new connection
// (the pooled one is found dead and the GET sent again, once), and none
// gets another request's answer.
func TestPlainKeepAlivePool(t *testing.T) {
	keep := newPoolOrigin(t, false)
	closing := newPoolOrigin(t, true)
	p := startSluice(t, "default: allow\n", nil)
	const n = 6
	for _, c := range []struct {
		name    string
		o       *poolOrigin
		accepts int64
	}{{"keep-alive origin", keep, 1}, {"closing origin", closing, n}} {
		args := []string{"-x", "http://" + p.addr, "-w", `|%{http_code}\n`}
		for i := range n {
			args = append(args, fmt.Sprintf("http://%s/r%d", c.o.ln.Addr(), i))
		}
		out, code := curl(t, args...)
		if code != 0 {
			t.Fatalf("%s: curl exit %d:\n%s", c.name, code, out)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != n {
			t.Fatalf("%s: %d answers, want %d:\n%s", c.name, len(lines), n, out)
		}
		for i, l := range lines {
			if want := fmt.Sprintf("answer %d to GET /r%d|200", i+1, i); l != want {
				t.Errorf("%s: answer %d is %q, want %q", c.name, i, l, want)
			}
		}
		if got := c.o.accepts.Load(); got != c.accepts {
			t.Errorf("%s: %d origin connections for %d requests, want %d", c.name, got, n, c.accepts)
		}
	}
}
