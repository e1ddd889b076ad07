package test

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Plain GET and HEAD requests on a kept connection are served on the
// accepting worker, not by net/http's server (issue 13, the keep-alive
// load); anything else goes to the HTTP server with the bytes already
// read. These tests hold the connection's behaviour to what net/http's
// server gave: keep-alive, pipelining, refusals, split heads, closes,
// idle timeout, shutdown, a client that hangs up.

// TestPlainLoopCurlOneConnection: curl fetches three URLs on one
// connection; the origin sees them, the access log names one client port.
func TestPlainLoopCurlOneConnection(t *testing.T) {
	o := newCountOrigin(t, "127.0.0.1:0")
	p := startSluice(t, "default: allow\naccess_log: access.json\n", nil)
	base := "http://" + o.addr
	out, code := curl(t, "-v", "-x", "http://"+p.addr, base+"/one", base+"/two", base+"/three")
	if code != 0 {
		t.Fatalf("curl exit %d:\n%s", code, out)
	}
	for _, want := range []string{"origin " + o.addr + " /one", "origin " + o.addr + " /two", "origin " + o.addr + " /three"} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "Re-using existing connection"); n != 2 {
		t.Errorf("curl reused the connection %d times, want 2:\n%s", n, out)
	}
	lines := waitLines(t, filepath.Join(p.dir, "access.json"), 3)
	clients := map[string]int{}
	for _, l := range lines {
		e := decodeLine(t, l)
		clients[e["client"].(string)]++
		if e["status"] != 200.0 || e["verdict"] != "allow" {
			t.Errorf("access line %s", l)
		}
	}
	if len(lines) != 3 || len(clients) != 1 {
		t.Errorf("want 3 lines from one client port, got:\n%s", strings.Join(lines, "\n"))
	}
}

func decodeLine(t *testing.T, l string) map[string]any {
	t.Helper()
	var e map[string]any
	if err := json.Unmarshal([]byte(l), &e); err != nil {
		t.Fatalf("not JSON: %q", l)
	}
	return e
}

// TestPlainLoopGoClient: Go's net/http client sends 20 GETs through the
// proxy; all but the first reuse its connection, every body is right.
func TestPlainLoopGoClient(t *testing.T) {
	o := newCountOrigin(t, "127.0.0.1:0")
	p := startSluice(t, "default: allow\n", nil)
	pu, _ := url.Parse("http://" + p.addr)
	tr := &http.Transport{Proxy: http.ProxyURL(pu)}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	reused := 0
	for i := range 20 {
		trace := &httptrace.ClientTrace{GotConn: func(ci httptrace.GotConnInfo) {
			if ci.Reused {
				reused++
			}
		}}
		req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("http://%s/n%d", o.addr, i), nil)
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := fmt.Sprintf("origin %s /n%d", o.addr, i); err != nil || string(body) != want || resp.StatusCode != 200 {
			t.Fatalf("request %d: %d %q %v, want %q", i, resp.StatusCode, body, err, want)
		}
	}
	if reused != 19 {
		t.Errorf("the client reused its connection %d times, want 19", reused)
	}
}

// rawExchange writes parts to a new connection to addr (pausing between
// them, so that the proxy reads them apart) and reads until the proxy
// closes it.
func rawExchange(t *testing.T, addr string, parts ...string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	for i, part := range parts {
		if i > 0 {
			time.Sleep(2 * time.Millisecond)
		}
		if _, err := io.WriteString(c, part); err != nil {
			t.Fatal(err)
		}
	}
	out, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("reading: %v after %q", err, out)
	}
	return string(out)
}

// readResponses parses the answers in out, in order.
func readResponses(t *testing.T, out string, methods ...string) []string {
	t.Helper()
	br := bufio.NewReader(strings.NewReader(out))
	var got []string
	for _, m := range methods {
		resp, err := http.ReadResponse(br, &http.Request{Method: m})
		if err != nil {
			t.Fatalf("answer %d: %v in %q", len(got)+1, err, out)
		}
		body, _ := io.ReadAll(resp.Body)
		got = append(got, fmt.Sprintf("%d %s", resp.StatusCode, body))
	}
	if rest, _ := io.ReadAll(br); len(rest) > 0 {
		t.Errorf("bytes after the last answer: %q", rest)
	}
	return got
}

// TestPlainLoopPipelined: three requests in one write are answered in
// order; the last asks to close, and the proxy closes.
func TestPlainLoopPipelined(t *testing.T) {
	o := newCountOrigin(t, "127.0.0.1:0")
	p := startSluice(t, "default: allow\n", nil)
	u := "http://" + o.addr
	out := rawExchange(t, p.addr,
		"GET "+u+"/a HTTP/1.1\r\nHost: x\r\n\r\n"+
			"HEAD "+u+"/b HTTP/1.1\r\nHost: x\r\n\r\n"+
			"GET "+u+"/c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	got := readResponses(t, out, "GET", "HEAD", "GET")
	want := []string{"200 origin " + o.addr + " /a", "200 ", "200 origin " + o.addr + " /c"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestPlainLoopRefusals: requests that net/http's server refuses (among
// them heads a parser could read two ways) get net/http's answer, as before the
// worker served plain requests, and reach no origin (counted TCP
// accepts); the same after a request the worker served on the same
// connection.
func TestPlainLoopRefusals(t *testing.T) {
	p := startSluice(t, "default: allow\n", nil)
	cases := []struct {
		name, head, status string
	}{
		{"two lengths", "Host: x\r\nContent-Length: 0\r\nContent-Length: 5\r\n", "HTTP/1.1 400 Bad Request"},
		{"two Hosts", "Host: x\r\nHost: y\r\n", "HTTP/1.1 400 Bad Request"},
		{"no Host", "", "HTTP/1.1 400 Bad Request: missing required Host header"},
		{"bad Host", "Host: a b\r\n", "HTTP/1.1 400 Bad Request: malformed Host header"},
		{"obs-fold of Host", "Host: x\r\n y\r\n", "HTTP/1.1 400 Bad Request: malformed Host header"},
		{"a space before the colon", "Host: x\r\nX-A : 1\r\n", "HTTP/1.1 400 Bad Request: invalid header name"},
		{"a control byte", "Host: x\r\nX-A: 1\x7f\r\n", "HTTP/1.1 400 Bad Request"},
	}
	for _, tc := range cases {
		for _, after := range []bool{false, true} {
			o := newCountOrigin(t, "127.0.0.1:0")
			bad := "GET http://" + o.addr + "/bad HTTP/1.1\r\n" + tc.head + "\r\n"
			req := bad
			if after {
				other := newCountOrigin(t, "127.0.0.1:0")
				req = "GET http://" + other.addr + "/ok HTTP/1.1\r\nHost: x\r\n\r\n" + bad
			}
			out := rawExchange(t, p.addr, req)
			if after {
				ok := "HTTP/1.1 200 OK\r\n"
				if !strings.HasPrefix(out, ok) || !strings.Contains(out, "/ok") {
					t.Errorf("%s after a request: the first answer is not its 200: %q", tc.name, out)
					continue
				}
				out = out[strings.Index(out, "/ok")+3:]
			}
			if !strings.HasPrefix(out, tc.status+"\r\n") {
				t.Errorf("%s (after a request: %v): got %q, want %q", tc.name, after, out, tc.status)
			}
			if n := o.accepts.Load(); n != 0 {
				t.Errorf("%s (after a request: %v): the origin accepted %d connections", tc.name, after, n)
			}
		}
	}
}

// TestPlainLoopSplitHeads: two pipelined requests reach the proxy in two
// parts, split at every byte: each is answered, whole and in order (a
// head not whole in a read goes to the HTTP server with what was read).
func TestPlainLoopSplitHeads(t *testing.T) {
	o := newCountOrigin(t, "127.0.0.1:0")
	p := startSluice(t, "default: allow\n", nil)
	u := "http://" + o.addr
	req := "GET " + u + "/a HTTP/1.1\r\nHost: x\r\n\r\nGET " + u + "/b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
	want := "200 origin " + o.addr + " /a|200 origin " + o.addr + " /b"
	for i := 1; i < len(req); i++ {
		out := rawExchange(t, p.addr, req[:i], req[i:])
		if got := strings.Join(readResponses(t, out, "GET", "GET"), "|"); got != want {
			t.Fatalf("split at %d (%q): got %q, want %q", i, req[:i], got, want)
		}
	}
}

// TestPlainLoopCloses: the connection closes after an answer exactly when
// net/http's server closed it: Connection: close, HTTP/1.0 without
// keep-alive; an HTTP/1.0 client asking for keep-alive keeps it.
func TestPlainLoopCloses(t *testing.T) {
	o := newCountOrigin(t, "127.0.0.1:0")
	p := startSluice(t, "default: allow\n", nil)
	u := "http://" + o.addr
	for _, tc := range []struct{ req, want string }{
		{"GET " + u + "/a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "Connection: close\r\n"},
		{"GET " + u + "/a HTTP/1.0\r\n\r\n", ""},
	} {
		// A second request behind the first must not be answered.
		out := rawExchange(t, p.addr, tc.req+"GET "+u+"/second HTTP/1.1\r\nHost: x\r\n\r\n")
		if strings.Contains(out, "/second") || !strings.Contains(out, tc.want) || !strings.Contains(out, " /a") {
			t.Errorf("%q: got %q", tc.req, out)
		}
	}
	out := rawExchange(t, p.addr, "GET "+u+"/a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"+
		"GET "+u+"/b HTTP/1.0\r\n\r\n")
	if !strings.HasPrefix(out, "HTTP/1.0 200 OK\r\n") || !strings.Contains(out, "Connection: keep-alive\r\n") || !strings.Contains(out, " /b") {
		t.Errorf("HTTP/1.0 keep-alive: got %q", out)
	}
}

// TestPlainLoopIdleTimeout: a kept connection with no next request is
// closed after timeouts.idle.
func TestPlainLoopIdleTimeout(t *testing.T) {
	o := newCountOrigin(t, "127.0.0.1:0")
	p := startSluice(t, "default: allow\ntimeouts:\n  idle: 1s\n", nil)
	br := keptAfterGet(t, p.addr, o.addr, 20*time.Second)
	start := time.Now()
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("want the proxy to close the idle connection, got %v after %v", err, time.Since(start))
	}
	if d := time.Since(start); d < 900*time.Millisecond {
		t.Errorf("closed after %v, before the idle timeout", d)
	}
}

// TestPlainLoopShutdown: an idle kept connection is closed as soon as a
// shutdown begins; the proxy stops without waiting for it.
func TestPlainLoopShutdown(t *testing.T) {
	o := newCountOrigin(t, "127.0.0.1:0")
	p := startSluice(t, "default: allow\nshutdown_grace: 60s\n", nil)
	br := keptAfterGet(t, p.addr, o.addr, 30*time.Second)
	p.stop(t) // fails the test if it takes 10s
	if _, err := br.ReadByte(); err != io.EOF && !errors.Is(err, net.ErrClosed) && !isReset(err) {
		t.Errorf("the kept connection: %v, want it closed", err)
	}
}

func isReset(err error) bool { return err != nil && strings.Contains(err.Error(), "reset") }

// TestPlainLoopClientGone: a client that hangs up in the middle of a
// long answer leaves an access line that says so, and the proxy serves
// the next client.
func TestPlainLoopClientGone(t *testing.T) {
	o := newOrigin(t, false)
	p := startSluice(t, "default: allow\naccess_log: access.json\n", nil)
	c, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	fmt.Fprintf(c, "GET %s/big?bytes=%d HTTP/1.1\r\nHost: x\r\n\r\n", o.URL, 256<<20)
	buf := make([]byte, 64<<10)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	c.Close()
	out, code := curl(t, "-x", "http://"+p.addr, o.URL+"/after")
	if code != 0 || !strings.Contains(out, "path=/after") {
		t.Fatalf("curl after the hang-up: exit %d: %s", code, out)
	}
	lines := waitLines(t, filepath.Join(p.dir, "access.json"), 2)
	for _, l := range lines {
		e := decodeLine(t, l)
		if e["path"] != "/big" {
			continue
		}
		down, _ := e["down"].(float64)
		if e["status"] != 200.0 || e["err"] == nil || down >= 256<<20 {
			t.Errorf("the cut answer's access line: %s", l)
		}
		return
	}
	t.Errorf("no access line for /big:\n%s", strings.Join(lines, "\n"))
}

// TestPlainLoopChunkedGet: a GET with both Content-Length and a chunked
// body goes to the HTTP server, which reads the body as chunked (the
// length is ignored) and takes what follows it for the next request, as
// it did before the worker served plain requests: the bytes behind the
// chunked body are a request of their own, never part of the first.
func TestPlainLoopChunkedGet(t *testing.T) {
	o := newCountOrigin(t, "127.0.0.1:0")
	p := startSluice(t, "default: allow\n", nil)
	u := "http://" + o.addr
	out := rawExchange(t, p.addr,
		"GET "+u+"/a HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"+
			"GET "+u+"/b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	got := strings.Join(readResponses(t, out, "GET", "GET"), "|")
	if want := "200 origin " + o.addr + " /a|200 origin " + o.addr + " /b"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// keptAfterGet sends one GET for http://origin/a through the proxy at
// proxy on a new connection (closed when the test ends, with a deadline
// of limit), reads its whole answer, and returns the connection's reader
// for what comes next.
func keptAfterGet(t *testing.T, proxy, origin string, limit time.Duration) *bufio.Reader {
	t.Helper()
	c, err := net.Dial("tcp", proxy)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(limit))
	fmt.Fprintf(c, "GET http://%s/a HTTP/1.1\r\nHost: x\r\n\r\n", origin)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	return br
}
