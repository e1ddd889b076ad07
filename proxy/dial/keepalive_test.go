package dial

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// scriptedOrigin is a loopback origin that hands each accepted connection
// (numbered from 0) to serve, and counts the accepts.
type scriptedOrigin struct {
	ln      net.Listener
	accepts atomic.Int64
	wg      sync.WaitGroup
}

func newScriptedOrigin(t *testing.T, serve func(i int, c net.Conn, br *bufio.Reader)) *scriptedOrigin {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o := &scriptedOrigin{ln: ln}
	o.wg.Add(1)
	go func() {
		defer o.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			i := int(o.accepts.Add(1)) - 1
			o.wg.Add(1)
			go func() {
				defer o.wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(20 * time.Second))
				serve(i, c, bufio.NewReader(c))
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); o.wg.Wait() })
	return o
}

// readReq reads one request head; false at the connection's end.
func readReq(br *bufio.Reader) (*http.Request, bool) {
	req, err := http.ReadRequest(br)
	if err != nil {
		return nil, false
	}
	io.Copy(io.Discard, req.Body)
	return req, true
}

// directTransport is the direct route's RoundTripper of a fresh Router.
func directTransport(t *testing.T) (http.RoundTripper, *Router) {
	t.Helper()
	r, err := NewRouter(Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.CloseIdleConnections)
	return r.Transport("direct"), r
}

// fetch sends a GET (or method) for path to addr on tr and reads the whole
// answer.
func fetch(ctx context.Context, tr http.RoundTripper, method, addr, path string) (*http.Response, string, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://"+addr+path, nil)
	if err != nil {
		return nil, "", err
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, string(b), err
}

// TestKeepAlivePoolReuses: answers that allow it leave their connection
// in the pool, HEAD and 204 included; one that asks to close, or whose
// body ends with the connection, does not.
func TestKeepAlivePoolReuses(t *testing.T) {
	o := newScriptedOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		for {
			req, ok := readReq(br)
			if !ok {
				return
			}
			switch req.URL.Path {
			case "/head":
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
			case "/204":
				io.WriteString(c, "HTTP/1.1 204 No Content\r\n\r\n")
			case "/chunked":
				io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-T: 1\r\n\r\n")
			case "/close":
				io.WriteString(c, "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
				return
			case "/eof": // delimited by the connection's end
				io.WriteString(c, "HTTP/1.1 200 OK\r\n\r\nok")
				return
			default:
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			}
		}
	})
	tr, _ := directTransport(t)
	addr := o.ln.Addr().String()
	steps := []struct {
		method, path, body string
		accepts            int64 // after the step
	}{
		{"GET", "/", "ok", 1},
		{"HEAD", "/head", "", 1},
		{"GET", "/204", "", 1},
		{"GET", "/chunked", "ok", 1},
		{"GET", "/", "ok", 1},
		{"GET", "/close", "ok", 1},
		{"GET", "/", "ok", 2},
		{"GET", "/eof", "ok", 2},
		{"GET", "/", "ok", 3},
	}
	for _, s := range steps {
		resp, body, err := fetch(context.Background(), tr, s.method, addr, s.path)
		if err != nil {
			t.Fatalf("%s %s: %v", s.method, s.path, err)
		}
		if body != s.body {
			t.Errorf("%s %s: body %q, want %q", s.method, s.path, body, s.body)
		}
		if s.path == "/chunked" && resp.Trailer.Get("X-T") != "1" {
			t.Errorf("chunked: trailer %v, want X-T: 1", resp.Trailer)
		}
		if s.method == "HEAD" && resp.ContentLength != 10 {
			t.Errorf("HEAD: Content-Length %d, want 10", resp.ContentLength)
		}
		if n := o.accepts.Load(); n != s.accepts {
			t.Fatalf("after %s %s: %d connections, want %d", s.method, s.path, n, s.accepts)
		}
	}
}

// TestKeepAliveResendsOnce: a pooled connection the origin closes as the
// next request arrives (its keep-alive timeout and the request crossed)
// is found out when the answer ends before its first byte; the GET goes
// once more on a new connection. One closed by the origin before (a FIN
// waiting) is not even written to. A new connection that ends without an
// answer is an error, not a loop of resends.
func TestKeepAliveResendsOnce(t *testing.T) {
	closed := make(chan struct{}, 10)
	o := newScriptedOrigin(t, func(i int, c net.Conn, br *bufio.Reader) {
		switch i {
		case 0: // one answer, then the next request meets a close
			if _, ok := readReq(br); ok {
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nKeep-Alive: timeout=1\r\n\r\nok")
			}
			readReq(br)
		case 1: // one answer, then a close before any request
			if _, ok := readReq(br); ok {
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			}
			c.Close()
			closed <- struct{}{}
		default: // never a word
			readReq(br)
		}
	})
	tr, _ := directTransport(t)
	addr := o.ln.Addr().String()
	for i, want := range []int64{1, 2} {
		if _, body, err := fetch(context.Background(), tr, "GET", addr, "/"); err != nil || body != "ok" {
			t.Fatalf("request %d: %q, %v", i, body, err)
		}
		if n := o.accepts.Load(); n != want {
			t.Fatalf("after request %d: %d connections, want %d", i, n, want)
		}
	}
	<-closed // the next request finds a connection closed by now
	if _, _, err := fetch(context.Background(), tr, "GET", addr, "/"); err == nil {
		t.Fatal("an origin that never answers gave an answer")
	}
	if n := o.accepts.Load(); n != 3 {
		// The closed pooled connection is dropped unwritten, then one
		// new connection; a failure there is not resent.
		t.Errorf("%d connections after the failing request, want 3", n)
	}
}

// TestKeepAliveNoReuseAfterPartialBody: a body the caller stopped reading,
// or one followed by bytes the origin should not have sent, leaves its
// connection closed: the next request never reads the rest as its answer.
func TestKeepAliveNoReuseAfterPartialBody(t *testing.T) {
	o := newScriptedOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		for {
			req, ok := readReq(br)
			if !ok {
				return
			}
			switch req.URL.Path {
			case "/big":
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n"+strings.Repeat("x", 100000))
			case "/extra":
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil")
			default:
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ngood")
			}
		}
	})
	tr, _ := directTransport(t)
	addr := o.ln.Addr().String()
	req, _ := http.NewRequest("GET", "http://"+addr+"/big", nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 10)
	io.ReadFull(resp.Body, buf)
	resp.Body.Close()
	if _, body, err := fetch(context.Background(), tr, "GET", addr, "/"); err != nil || body != "good" {
		t.Fatalf("after a partly read body: %q, %v", body, err)
	}
	if n := o.accepts.Load(); n != 2 {
		t.Errorf("%d connections, want 2: the partly read one was not reused", n)
	}
	if _, body, err := fetch(context.Background(), tr, "GET", addr, "/extra"); err != nil || body != "ok" {
		t.Fatalf("/extra: %q, %v", body, err)
	}
	if _, body, err := fetch(context.Background(), tr, "GET", addr, "/"); err != nil || body != "good" {
		t.Fatalf("after an answer with extra bytes: %q, %v (want a fresh answer)", body, err)
	}
}

// TestKeepAliveCutBody: a body cut by the origin is an error to the
// reader, never a clean end.
func TestKeepAliveCutBody(t *testing.T) {
	o := newScriptedOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		req, ok := readReq(br)
		if !ok {
			return
		}
		if req.URL.Path == "/chunked" {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n")
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nok")
	})
	tr, _ := directTransport(t)
	for _, path := range []string{"/length", "/chunked"} {
		_, body, err := fetch(context.Background(), tr, "GET", o.ln.Addr().String(), path)
		if err == nil || !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("%s: body %q, err %v; want io.ErrUnexpectedEOF", path, body, err)
		}
	}
}

// TestKeepAliveSkips1xx: 1xx answers before the real one are skipped, up
// to a bound; an origin that sends nothing else fails the request.
func TestKeepAliveSkips1xx(t *testing.T) {
	o := newScriptedOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		for {
			req, ok := readReq(br)
			if !ok {
				return
			}
			if req.URL.Path == "/endless" {
				for range 50 {
					io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n")
				}
				return
			}
			io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	tr, _ := directTransport(t)
	addr := o.ln.Addr().String()
	resp, body, err := fetch(context.Background(), tr, "GET", addr, "/")
	if err != nil || resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("got %v %q %v, want 200 ok", resp, body, err)
	}
	if _, _, err := fetch(context.Background(), tr, "GET", addr, "/endless"); err == nil {
		t.Error("endless 1xx answers gave a response")
	}
}

// TestKeepAliveBoundsHeaders: an answer whose headers never end fails
// after maxHeaderBytes instead of being read without bound: the origin
// offers 64 MiB and cannot write much more than the bound before the
// client closes.
func TestKeepAliveBoundsHeaders(t *testing.T) {
	var wrote atomic.Int64
	o := newScriptedOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		if _, ok := readReq(br); !ok {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\n")
		line := "X-Pad: " + strings.Repeat("p", 1000) + "\r\n"
		for range 64 << 20 / len(line) {
			n, err := io.WriteString(c, line)
			wrote.Add(int64(n))
			if err != nil {
				return
			}
		}
	})
	tr, _ := directTransport(t)
	if resp, _, err := fetch(context.Background(), tr, "GET", o.ln.Addr().String(), "/"); err == nil {
		t.Fatalf("endless headers gave %s", resp.Status)
	}
	o.ln.Close()
	o.wg.Wait()
	if n := wrote.Load(); n > 16<<20 {
		t.Errorf("the origin wrote %d bytes of headers before the client gave up", n)
	}
}

// TestKeepAliveCancel: a request whose context ends while the origin
// says nothing returns with the cancellation, on a new or pooled
// connection, and does not leave that connection in the pool.
func TestKeepAliveCancel(t *testing.T) {
	o := newScriptedOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		for {
			req, ok := readReq(br)
			if !ok {
				return
			}
			if req.URL.Path == "/silent" {
				io.Copy(io.Discard, br) // until the client closes
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	tr, _ := directTransport(t)
	addr := o.ln.Addr().String()
	if _, _, err := fetch(context.Background(), tr, "GET", addr, "/"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	_, _, err := fetch(ctx, tr, "GET", addr, "/silent")
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled request: %v, want context.Canceled", err)
	}
	if _, body, err := fetch(context.Background(), tr, "GET", addr, "/"); err != nil || body != "ok" {
		t.Fatalf("after the cancel: %q, %v", body, err)
	}
	if n := o.accepts.Load(); n != 2 {
		t.Errorf("%d connections, want 2: the cancelled one is closed, not pooled", n)
	}
}

// TestKeepAliveCloseIdle: CloseIdleConnections closes the pooled
// connections (the origin sees them end).
func TestKeepAliveCloseIdle(t *testing.T) {
	ended := make(chan struct{}, 1)
	o := newScriptedOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		for {
			if _, ok := readReq(br); !ok {
				ended <- struct{}{}
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	tr, r := directTransport(t)
	if _, _, err := fetch(context.Background(), tr, "GET", o.ln.Addr().String(), "/"); err != nil {
		t.Fatal(err)
	}
	r.CloseIdleConnections()
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the pooled connection stayed open after CloseIdleConnections")
	}
}

// TestKeepAliveOnlySimple: requests with a body stay on http.Transport,
// which sends the body (a pool bug would drop it).
func TestKeepAliveOnlySimple(t *testing.T) {
	o := newScriptedOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			b, _ := io.ReadAll(req.Body)
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: "+strconv.Itoa(len(b))+"\r\n\r\n"+string(b))
		}
	})
	tr, _ := directTransport(t)
	req, _ := http.NewRequest("POST", "http://"+o.ln.Addr().String()+"/", strings.NewReader("payload"))
	if simple(req) {
		t.Fatal("a POST with a body counts as simple")
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if b, _ := io.ReadAll(resp.Body); string(b) != "payload" {
		t.Errorf("echoed %q", b)
	}
}

// TestKeepAliveBodyAfterEnd: a body read to its end keeps answering
// io.EOF (the connection is back in the pool by then, and reading on
// must not reach it); a closed body answers an error.
func TestKeepAliveBodyAfterEnd(t *testing.T) {
	o := newScriptedOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		for {
			if _, ok := readReq(br); !ok {
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	tr, _ := directTransport(t)
	req, _ := http.NewRequest("GET", "http://"+o.ln.Addr().String()+"/", nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(resp.Body); err != nil || string(b) != "ok" {
		t.Fatalf("body %q, %v", b, err)
	}
	for range 2 {
		if n, err := resp.Body.Read(make([]byte, 8)); n != 0 || err != io.EOF {
			t.Fatalf("read after the end: %d, %v; want 0, io.EOF", n, err)
		}
	}
	resp.Body.Close()
	if _, err := resp.Body.Read(make([]byte, 8)); err == nil || err == io.EOF {
		t.Errorf("read after Close: %v, want an error", err)
	}
	// The connection went back to the pool at the end, not at Close.
	if _, body, err := fetch(context.Background(), tr, "GET", o.ln.Addr().String(), "/"); err != nil || body != "ok" || o.accepts.Load() != 1 {
		t.Errorf("next request: %q, %v, %d connections (want the pooled one)", body, err, o.accepts.Load())
	}
}

// TestKeepAliveSweep: the sweep closes pooled connections the origin
// closed, or wrote to unasked, and keeps the open and silent ones.
func TestKeepAliveSweep(t *testing.T) {
	closed := make(chan struct{}, 1)
	var mode sync.Map // origin addr -> "close", "chatter" or "keep"
	serve := func(_ int, c net.Conn, br *bufio.Reader) {
		m, _ := mode.Load(c.LocalAddr().String())
		for {
			if _, ok := readReq(br); !ok {
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			switch m {
			case "close":
				c.Close()
				closed <- struct{}{}
				return
			case "chatter":
				io.WriteString(c, "unasked")
				closed <- struct{}{}
			}
		}
	}
	origins := map[string]*scriptedOrigin{}
	for _, m := range []string{"close", "chatter", "keep"} {
		o := newScriptedOrigin(t, serve)
		mode.Store(o.ln.Addr().String(), m)
		origins[m] = o
	}
	tr, r := directTransport(t)
	for _, m := range []string{"close", "chatter", "keep"} {
		if _, body, err := fetch(context.Background(), tr, "GET", origins[m].ln.Addr().String(), "/"); err != nil || body != "ok" {
			t.Fatalf("%s: %q, %v", m, body, err)
		}
	}
	<-closed
	<-closed
	ka := r.direct0.ka
	// Wait (bounded) until the close and the stray bytes have reached
	// the pooled sockets: the kernel delivers them on loopback at once,
	// but the test must not depend on it. (Stray bytes read together
	// with the answer already kept their connection out of the pool.)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		ka.mu.Lock()
		alive := 0
		for _, m := range []string{"close", "chatter"} {
			for _, oc := range ka.idle[origins[m].ln.Addr().String()] {
				if oc.peek.idleAlive() {
					alive++
				}
			}
		}
		ka.mu.Unlock()
		if alive == 0 || time.Now().After(deadline) {
			break
		}
	}
	ka.sweep()
	ka.mu.Lock()
	n, kept := ka.n, len(ka.idle[origins["keep"].ln.Addr().String()])
	ka.mu.Unlock()
	if n != 1 || kept != 1 {
		t.Errorf("after the sweep: %d idle connections, %d to the open origin; want 1 and 1", n, kept)
	}
	if _, body, err := fetch(context.Background(), tr, "GET", origins["keep"].ln.Addr().String(), "/"); err != nil || body != "ok" || origins["keep"].accepts.Load() != 1 {
		t.Errorf("the kept connection: %q, %v, %d connections", body, err, origins["keep"].accepts.Load())
	}
}

// TestWriteRequestAsRequestWrite: the pool writes a request head byte for
// byte as Request.Write does (what http.Transport sends), for the
// requests it takes.
func TestWriteRequestAsRequestWrite(t *testing.T) {
	cases := []struct {
		method, url, host string
		header            http.Header
	}{
		{"GET", "http://example.test/", "", http.Header{"User-Agent": {""}}},
		{"GET", "http://example.test:8080/a/b?q=1&r=%20x", "", http.Header{"User-Agent": {"curl/8.0"}, "Accept": {"*/*"}}},
		{"HEAD", "http://[::1]:8080/x", "", http.Header{"User-Agent": {"  spaced ua\t"}, "X-Dup": {"one", "two"}, "x-lower": {"v"}}},
		{"GET", "http://safe.test/", "www.example.test", http.Header{"User-Agent": {"a", "b"}, "Cookie": {"k=v; l=w"}, "Content-Length": {"0"}, "Host": {"forged"}}},
		{"GET", "http://127.0.0.1:9/%7Euser/", "", http.Header{"User-Agent": {""}, "If-None-Match": {`"e"`}, "Trailer": {"X"}, "Transfer-Encoding": {"chunked"}}},
		{"GET", "http://example.test/", "", http.Header{}},                                    // no User-Agent key: Request.Write adds Go's
		{"GET", "http://example.test/", "", http.Header{"User-Agent": {"caf\u00e9"}}},         // not ASCII
		{"GET", "http://example.test/", "bad host\x7f", http.Header{"User-Agent": {""}}},      // invalid Host: both fail
		{"GET", "http://example.test/", "", http.Header{"User-Agent": {""}, "X-Empty": {""}}}, // empty value
	}
	for i, c := range cases {
		req, err := http.NewRequest(c.method, c.url, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host, req.Header = c.host, c.header
		var want, got strings.Builder
		bw := bufio.NewWriter(&want)
		werr := req.Write(bw)
		bw.Flush()
		bw = bufio.NewWriter(&got)
		gerr := writeRequest(bw, req)
		bw.Flush()
		if (werr == nil) != (gerr == nil) || got.String() != want.String() {
			t.Errorf("case %d: wrote\n%q (%v)\nRequest.Write\n%q (%v)", i, got.String(), gerr, want.String(), werr)
		}
	}
}

// TestKeepAliveUnsolicitedNeverAnswers: bytes an origin sends on an idle
// pooled connection (a second answer to one request, a body after a
// HEAD's headers) never pass for the next request's answer: that
// connection is closed and the request goes on a new one.
func TestKeepAliveUnsolicitedNeverAnswers(t *testing.T) {
	pooled := make(chan struct{})
	o := newScriptedOrigin(t, func(i int, c net.Conn, br *bufio.Reader) {
		for {
			req, ok := readReq(br)
			if !ok {
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfresh")
			if i == 0 && req.URL.Path == "/first" {
				<-pooled // the client has the answer and pooled the connection
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale")
			}
		}
	})
	tr, r := directTransport(t)
	addr := o.ln.Addr().String()
	if _, body, err := fetch(context.Background(), tr, "GET", addr, "/first"); err != nil || body != "fresh" {
		t.Fatalf("first: %q, %v", body, err)
	}
	close(pooled)
	ka := r.direct0.ka
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		ka.mu.Lock()
		l := ka.idle[addr]
		arrived := len(l) == 1 && !l[0].peek.idleAlive()
		ka.mu.Unlock()
		if arrived {
			break
		}
	}
	if _, body, err := fetch(context.Background(), tr, "GET", addr, "/second"); err != nil || body != "fresh" {
		t.Fatalf("second request: %q, %v; want a fresh answer", body, err)
	}
	if n := o.accepts.Load(); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}
}
