package test

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync/atomic"
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

// sameOrigin answers by the request's path, then closes (Connection:
// close, so that the proxy's pool never reuses a connection and every
// forwarded request is one counted accept): bodies longer or shorter than
// their Content-Length, cut chunks, a 204 with a body, a 304, hop-by-hop
// headers, the request head echoed.
func sameOrigin(t *testing.T) *rawOrigin {
	return newRawOrigin(t, func(c net.Conn, _ *bufio.Reader, line string) {
		f := strings.Fields(line)
		if len(f) < 2 {
			return
		}
		path := f[1][strings.LastIndex(f[1], "/"):]
		answers := map[string]string{
			"/short":    "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabcde",
			"/long":     "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nabcdefghij",
			"/eof":      "HTTP/1.1 200 OK\r\n\r\nabcde",
			"/chunkcut": "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n",
			"/204":      "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\nConnection: close\r\n\r\nabcde",
			"/304":      "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\nContent-Type: x/y\r\nConnection: close\r\n\r\n",
			"/hop":      "HTTP/1.1 200 OK\r\nConnection: close, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: 5\r\nContent-Length: 2\r\n\r\nok",
			"/big":      "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + strings.Repeat("x", 5000),
		}
		a, ok := answers[path]
		if !ok {
			a = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
		}
		io.WriteString(c, a)
		time.Sleep(20 * time.Millisecond) // the bytes go out before the FIN
	})
}

var dateLine = regexp.MustCompile(`\r\nDate: [^\r]*`)

// exchangeRaw sends req to addr, in one write or (split) its first 5
// bytes, a pause, then the rest, so that the head is not whole in the
// first read and net/http's server serves the connection; it returns what
// came back until the proxy closed, the Date headers removed, and how the
// connection ended.
func exchangeRaw(t *testing.T, addr, req string, split bool) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if split {
		io.WriteString(c, req[:5])
		time.Sleep(30 * time.Millisecond)
		req = req[5:]
	}
	io.WriteString(c, req)
	out, err := io.ReadAll(c)
	end := "closed"
	switch {
	case errors.Is(err, syscall.ECONNRESET):
		end = "reset"
	case errors.Is(err, os.ErrDeadlineExceeded):
		end = "still open"
	case err != nil:
		end = err.Error()
	}
	return dateLine.ReplaceAllString(string(out), "") + " <" + end + ">"
}

// TestPlainSameAsHTTPServer: each request (most followed by a second one
// on the connection) gets the same bytes back, the same end of the
// connection and the same number of origin connections (counted TCP
// accepts) whether its head came whole in the first read (the worker's
// plain loop serves it) or in two reads (net/http's server): smuggling
// and desync attempts (Content-Length with Transfer-Encoding, a body
// behind "Content-Length: 0", two lengths, Transfer-Encoding on
// HTTP/1.0, obs-fold, bare CR and LF, NUL, a space before the colon),
// versions, Host against the absolute URI, user info, the proxy itself
// as the target (refused: loop), Expect, Upgrade,
// Connection tokens, and origin answers with a wrong length, cut, 204,
// 304 or hop-by-hop headers, for GET and HEAD.
func TestPlainSameAsHTTPServer(t *testing.T) {
	o := sameOrigin(t)
	// A partial head waits for the handshake timeout.
	p := startSluice(t, "default: allow\ntimeouts:\n  handshake: 1s\n", nil)
	u := "http://127.0.0.1:" + o.port
	next := "GET " + u + "/next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
	get := func(path, head string) string { return "GET " + u + path + " HTTP/1.1\r\nHost: x\r\n" + head + "\r\n" }
	cases := []string{
		get("/ok", "Content-Length: 0\r\n") + "GARBAGE\r\n\r\n",
		get("/ok", "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n") + "0\r\n\r\n" + next,
		"GET " + u + "/ok HTTP/1.0\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n5\r\nabcde\r\n0\r\n\r\n" + next,
		"GET " + u + "/ok HTTP/1.0\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n" + next,
		get("/ok", "Content-Length: 0\r\nContent-Length: 0\r\n") + next,
		get("/ok", "Content-Length: 0, 0\r\n") + next,
		get("/ok", "Content-Length: +0\r\n") + next,
		get("/ok", "Content-Length: 00\r\n") + next,
		get("/ok", "Transfer-Encoding: identity\r\n") + next,
		get("/ok", "X-A: 1\r\n\tfolded\r\n") + next,
		get("/ok", "X-A: a\x00b\r\n") + next,
		get("/ok", "Host: y\r\n") + next,
		get("/ok", "Expect: 100-continue\r\n") + next,
		get("/ok", "Upgrade: h2c\r\nConnection: Upgrade\r\n") + next,
		get("/ok", "Connection: keep-alive, close\r\n") + next,
		get("/ok", "Connection: close\r\nConnection: keep-alive\r\n") + next,
		"GET " + u + "/ok HTTP/1.1\r\nHost: x\rX-A: y\r\n\r\n" + next,
		"GET " + u + "/ok HTTP/1.1\r\nHost: x\r\nX-A: a\nb\r\n\r\n" + next,
		"GET " + u + "/ok HTTP/1.1\r\nHost : x\r\n\r\n" + next,
		"GET " + u + "/ok HTTP/1.1\r\nHost:\r\n\r\n" + next,
		"GET " + u + "/ok HTTP/1.1\r\n\r\n" + next,
		"GET " + u + "/ok HTTP/1.1\nHost: x\n\n" + next,
		"GET " + u + "/ok HTTP/1.1\r\nHost: x\n\r\n" + next,
		"GET " + u + "/ok HTTP/1.0\r\n\r\n" + next,
		"GET " + u + "/ok HTTP/1.2\r\nHost: x\r\n\r\n" + next,
		"GET " + u + "/ok HTTP/2.0\r\nHost: x\r\n\r\n" + next,
		"GET  " + u + "/ok HTTP/1.1\r\nHost: x\r\n\r\n" + next,
		"GET http://user:pw@127.0.0.1:" + o.port + "/ok HTTP/1.1\r\nHost: x\r\n\r\n" + next,
		"GET http://0.0.0.0:" + o.port + "/ok HTTP/1.1\r\nHost: x\r\n\r\n" + next,
		"GET /ok HTTP/1.1\r\nHost: 127.0.0.1:" + o.port + "\r\n\r\n" + next,
		"GET ftp://127.0.0.1:" + o.port + "/ok HTTP/1.1\r\nHost: x\r\n\r\n" + next,
		get("/ok", "") + "\r\n" + next,
		get("/ok", "") + "POST " + u + "/p HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc" + next,
		get("/ok", "") + "GET " + u + "/partial HTTP/1.1\r\nHo",
		get("/short", "") + next,
		get("/long", "") + next,
		get("/eof", "") + next,
		get("/chunkcut", "") + next,
		"GET " + u + "/chunkcut HTTP/1.0\r\n\r\n",
		get("/204", "") + next,
		get("/304", "") + next,
		get("/hop", "Connection: X-Foo\r\nX-Foo: secret\r\nKeep-Alive: 1\r\nTE: trailers\r\n") + next,
		get("/big", "") + next,
		"GET " + u + "/big HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" + next,
		"HEAD " + u + "/short HTTP/1.1\r\nHost: x\r\n\r\n" + next,
		"HEAD " + u + "/304 HTTP/1.1\r\nHost: x\r\n\r\n" + next,
		"HEAD " + u + "/big HTTP/1.1\r\nHost: x\r\n\r\n" + next,
		"HEAD " + u + "/big HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" + next,
	}
	// The proxy itself as the target, however spelled: refused (loop).
	_, self, _ := net.SplitHostPort(p.addr)
	var selfCases []string
	for _, h := range []string{"127.0.0.1:" + self, "localhost:" + self, "[::ffff:127.0.0.1]:" + self, "127.0.0.1.:" + self, "LOCALHOST.:" + self, "user@127.0.0.1:" + self} {
		selfCases = append(selfCases, "GET http://"+h+"/ HTTP/1.1\r\nHost: x\r\n\r\n"+next)
	}
	for _, req := range selfCases {
		if out := exchangeRaw(t, p.addr, req, false); !strings.HasPrefix(out, "HTTP/1.1 403 Forbidden\r\n") {
			t.Errorf("%q: got %q, want 403", req, out)
		}
	}
	for _, req := range append(cases, selfCases...) {
		before := o.accepts.Load()
		whole := exchangeRaw(t, p.addr, req, false)
		mid := o.accepts.Load()
		split := exchangeRaw(t, p.addr, req, true)
		after := o.accepts.Load()
		if whole != split || mid-before != after-mid {
			t.Errorf("%q:\n  in one read (the worker): %d origin connections, %q\n  in two reads (net/http): %d origin connections, %q", req, mid-before, whole, after-mid, split)
		}
	}
}

// TestPlainClientGoneOriginNotReused: a client that hangs up in the middle
// of an answer (a reset) cuts the origin's connection too: the next
// request, from another client, reaches the origin on a new connection
// (counted TCP accepts), never on the one whose answer is half read;
// whether the worker or net/http's server served the cut request.
func TestPlainClientGoneOriginNotReused(t *testing.T) {
	p := startSluice(t, "default: allow\n", nil)
	for _, split := range []bool{false, true} {
		// A new origin each time: the proxy's pool holds none of its
		// connections yet.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		var accepts atomic.Int64
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/slow" {
				io.WriteString(w, "ok")
				return
			}
			for range 500 { // at most 5 s
				if _, err := io.WriteString(w, strings.Repeat("y", 1000)); err != nil {
					return
				}
				w.(http.Flusher).Flush()
				time.Sleep(10 * time.Millisecond)
			}
		}), ReadHeaderTimeout: 10 * time.Second}
		go srv.Serve(countingListener{ln, &accepts})
		t.Cleanup(func() { srv.Close() })
		o := ln.Addr().String()
		c, err := net.Dial("tcp", p.addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(20 * time.Second))
		req := "GET http://" + o + "/slow HTTP/1.1\r\nHost: x\r\n\r\n"
		if split {
			io.WriteString(c, req[:5])
			time.Sleep(30 * time.Millisecond)
			req = req[5:]
		}
		io.WriteString(c, req)
		if _, err := io.ReadFull(c, make([]byte, 3000)); err != nil {
			t.Fatal(err)
		}
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
		out, code := curl(t, "-sS", "-x", "http://"+p.addr, "http://"+o+"/after")
		if code != 0 || out != "ok" {
			t.Fatalf("split %v: curl after the hang-up: exit %d: %s", split, code, out)
		}
		if n := accepts.Load(); n != 2 {
			t.Errorf("split %v: the origin accepted %d connections for the cut answer and the next request, want 2", split, n)
		}
	}
}

// TestPlainShutdownDuringAnswerSaysClose: a shutdown that begins while a
// request waits for its origin makes its answer say "Connection: close"
// (net/http's server decides keep-alive when it writes the head), and
// the request behind it on the connection is not served (its origin
// never asked: counted requests); whether the worker or net/http's server
// serves the connection.
func TestPlainShutdownDuringAnswerSaysClose(t *testing.T) {
	for _, split := range []bool{false, true} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		got, release := make(chan string, 2), make(chan struct{})
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			got <- r.URL.Path
			<-release
			io.WriteString(w, "ok")
		}), ReadHeaderTimeout: 10 * time.Second}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
		o := ln.Addr().String()
		p := startSluice(t, "default: allow\nshutdown_grace: 10s\n", nil)
		c, err := net.Dial("tcp", p.addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(20 * time.Second))
		req := "GET http://" + o + "/a HTTP/1.1\r\nHost: x\r\n\r\nGET http://" + o + "/b HTTP/1.1\r\nHost: x\r\n\r\n"
		if split {
			io.WriteString(c, req[:5])
			time.Sleep(30 * time.Millisecond)
			req = req[5:]
		}
		io.WriteString(c, req)
		select {
		case <-got:
		case <-time.After(10 * time.Second):
			t.Fatal("the origin was not asked")
		}
		p.cmd.Process.Signal(syscall.SIGTERM)
		p.waitLog(t, "shutting down")
		close(release)
		out, err := io.ReadAll(c)
		c.Close()
		resp, rerr := http.ReadResponse(bufio.NewReader(strings.NewReader(string(out))), nil)
		if rerr != nil || resp.StatusCode != 200 || !resp.Close {
			t.Errorf("split %v: got %q (%v), want a 200 that says Connection: close", split, out, err)
		}
		if len(got) != 0 {
			t.Errorf("split %v: the request behind the first reached the origin", split)
		}
	}
}
