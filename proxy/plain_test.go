package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice/proxy/dial"
)

// writeCounter is a listener whose accepted conns count their Write calls
// (each is one write(2) on a TCP conn).
type writeCounter struct {
	net.Listener
	writes atomic.Int64
}

func (l *writeCounter) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countedConn{Conn: c, writes: &l.writes}, nil
}

type countedConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c *countedConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// TestSmallResponseOneWrite: a small answer leaves the proxy in one write
// to the client, status line, headers and body together, for each
// request on a kept-alive connection (a write on loopback costs about as
// much as the rest of the request: issue 13); a chunked one that came
// whole, final chunk included, too. An answer without Content-Type gets
// none added (net/http would sniff one from the body).
func TestSmallResponseOneWrite(t *testing.T) {
	body := strings.Repeat("b", 1024)
	o := newOrigin(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			switch req.URL.Path {
			case "/304":
				io.WriteString(c, "HTTP/1.1 304 Not Modified\r\nETag: \"e\"\r\n\r\n")
			case "/chunked": // the whole answer at once, final chunk included
				io.WriteString(c, fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", len(body), body))
			case "/untyped":
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\n<html></html>")
			default: // HEAD gets the GET's headers and no body
				head := fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n", len(body))
				if req.Method == http.MethodHead {
					io.WriteString(c, head)
				} else {
					io.WriteString(c, head+body)
				}
			}
		}
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	wc := &writeCounter{Listener: ln}
	s := &Server{Policy: &testPolicy{}, Dial: (&testDial{}).Dial}
	_, stop := serve(s, wc)
	t.Cleanup(func() { stop() })

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	reqs := []struct{ method, path string }{
		{"GET", "/1k"}, {"GET", "/1k"}, {"HEAD", "/1k"}, {"GET", "/304"}, {"GET", "/chunked"},
		{"GET", "/untyped"}, {"GET", "/1k"},
	}
	for i, r := range reqs {
		fmt.Fprintf(c, "%s http://%s%s HTTP/1.1\r\nHost: x\r\n\r\n", r.method, o.ln.Addr(), r.path)
		resp, err := http.ReadResponse(br, &http.Request{Method: r.method})
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("request %d: body: %v", i, err)
		}
		if want := len(body); r.method == "GET" && (r.path == "/1k" || r.path == "/chunked") && string(b) != body {
			t.Fatalf("request %d: %d bytes, want %d", i, len(b), want)
		}
		if r.method == "HEAD" && resp.ContentLength != int64(len(body)) {
			t.Errorf("HEAD: Content-Length %d, want %d", resp.ContentLength, len(body))
		}
		if ct, ok := resp.Header["Content-Type"]; r.path == "/untyped" && (ok || string(b) != "<html></html>") {
			t.Errorf("untyped answer: Content-Type %q, body %q; want none and the body", ct, b)
		}
		// Every byte of the answer has arrived, so every write of it was
		// counted.
		if n := wc.writes.Load(); n != int64(i+1) {
			t.Fatalf("after %s %s (request %d): %d writes to the client, want %d", r.method, r.path, i, n, i+1)
		}
	}
}

// TestTrailersRelayed: trailers of a chunked answer reach the client,
// announced or not, when the answer came whole (the last bytes are not
// flushed on their own, yet the trailers must not be lost to a computed
// Content-Length) and when it came in pieces.
func TestTrailersRelayed(t *testing.T) {
	o := newOrigin(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			announce := ""
			if req.URL.Path == "/announced" {
				announce = "Trailer: X-Sum\r\n"
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"+announce+"Transfer-Encoding: chunked\r\n\r\n2\r\nok\r\n")
			if req.URL.Path == "/pieces" {
				time.Sleep(10 * time.Millisecond) // the final chunk comes later
			}
			io.WriteString(c, "0\r\nX-Sum: 42\r\n\r\n")
		}
	})
	r, err := dial.NewRouter(dial.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.CloseIdleConnections)
	for _, tr := range []struct {
		name string
		rt   func(string) http.RoundTripper
	}{{"default transport", nil}, {"router (keep-alive pool)", r.Transport}} {
		f := newFixture(t, func(s *Server) { s.Transport = tr.rt })
		cl := f.client(t, nil)
		for _, path := range []string{"/announced", "/whole", "/pieces"} {
			resp, err := cl.Get("http://127.0.0.1:" + o.port() + path)
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || string(b) != "ok" {
				t.Fatalf("%s %s: body %q, %v", tr.name, path, b, err)
			}
			if got := resp.Trailer.Get("X-Sum"); got != "42" {
				t.Errorf("%s %s: trailer X-Sum %q, want 42 (trailers %v)", tr.name, path, got, resp.Trailer)
			}
		}
	}
}
