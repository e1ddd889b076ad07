package server

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestReadPlain: the worker serves only the requests net/http's server
// would hand to its handler unchanged, and only bodiless GET and HEAD to
// an absolute URI; everything else (each a way to smuggle a request past
// a proxy that parses differently) goes to the HTTP server, which answers
// it as before.
func TestReadPlain(t *testing.T) {
	const o = "http://127.0.0.1:8/a"
	tests := []struct {
		name, head string
		served     bool
		rest       string
	}{
		{"get", "GET " + o + " HTTP/1.1\r\nHost: x\r\n\r\n", true, ""},
		{"head", "HEAD " + o + " HTTP/1.1\r\nHost: x\r\n\r\n", true, ""},
		{"HTTP/1.0 without Host", "GET " + o + " HTTP/1.0\r\n\r\n", true, ""},
		{"zero length", "GET " + o + " HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", true, ""},
		{"Host differs from the URI", "GET " + o + " HTTP/1.1\r\nHost: evil.test\r\n\r\n", true, ""},
		{"pipelined", "GET " + o + " HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\n", true, "GET /b HTTP/1.1\r\n"},
		{"post", "POST " + o + " HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", false, ""},
		{"connect", "CONNECT x:1 HTTP/1.1\r\nHost: x:1\r\n\r\n", false, ""},
		{"lower-case method", "get " + o + " HTTP/1.1\r\nHost: x\r\n\r\n", false, ""},
		{"origin form", "GET /a HTTP/1.1\r\nHost: x\r\n\r\n", false, ""},
		{"a body", "GET " + o + " HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", false, ""},
		{"CL and TE", "GET " + o + " HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", false, ""},
		{"TE", "GET " + o + " HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", false, ""},
		{"two lengths", "GET " + o + " HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\n", false, ""},
		{"two Hosts", "GET " + o + " HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", false, ""},
		{"no Host", "GET " + o + " HTTP/1.1\r\n\r\n", false, ""},
		{"bad Host", "GET " + o + " HTTP/1.1\r\nHost: a b\r\n\r\n", false, ""},
		{"obs-fold", "GET " + o + " HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n 2\r\n\r\n", false, ""},
		{"obs-fold of Host", "GET " + o + " HTTP/1.1\r\nHost: x\r\n y\r\n\r\n", false, ""},
		{"obs-fold of Host by a tab", "GET " + o + " HTTP/1.1\r\nHost: x\r\n\ty\r\n\r\n", false, ""},
		{"bare LF", "GET " + o + " HTTP/1.1\nHost: x\n\nGET " + o + " HTTP/1.1\r\nHost: x\r\n\r\n", false, ""},
		{"a space before the colon", "GET " + o + " HTTP/1.1\r\nHost: x\r\nX-A : 1\r\n\r\n", false, ""},
		{"a control byte in a name", "GET " + o + " HTTP/1.1\r\nHost: x\r\nX\x01A: 1\r\n\r\n", false, ""},
		{"a control byte in a value", "GET " + o + " HTTP/1.1\r\nHost: x\r\nX-A: 1\x7f\r\n\r\n", false, ""},
		{"Expect", "GET " + o + " HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n", false, ""},
		{"Upgrade", "GET " + o + " HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", false, ""},
		{"HTTP/2", "GET " + o + " HTTP/2.0\r\nHost: x\r\n\r\n", false, ""},
		{"HTTP/0.9", "GET " + o + "\r\n\r\n", false, ""},
		{"partial head", "GET " + o + " HTTP/1.1\r\nHost: x\r\n", false, ""},
	}
	for _, tt := range tests {
		r, rest := readPlain([]byte(tt.head))
		if (r != nil) != tt.served || string(rest) != tt.rest {
			t.Errorf("%s: served %v rest %q, want served %v rest %q", tt.name, r != nil, rest, tt.served, tt.rest)
		}
		if r != nil && (r.Header["Host"] != nil || !strings.HasPrefix(r.URL.String(), "http://")) {
			t.Errorf("%s: request %+v", tt.name, r)
		}
	}
}

// TestPlainLoopOnWorker: keep-alive GETs and HEADs are served on the
// worker: no HTTP server is started for them. A request the loop does
// not serve (a POST with a body), on the same connection after them,
// goes to the HTTP server with the bytes read, and is answered in turn.
func TestPlainLoopOnWorker(t *testing.T) {
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %s", r.Method, r.URL.Path, body)
	}))
	defer origin.Close()
	r := startRun(t, "")
	c, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(c)
	ask := func(method, path, extra string) string {
		fmt.Fprintf(c, "%s %s%s HTTP/1.1\r\nHost: x\r\n%s", method, origin.URL, path, extra)
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		return fmt.Sprintf("%d %s", resp.StatusCode, body)
	}
	for i := range 5 {
		if got, want := ask("GET", fmt.Sprintf("/g%d", i), "\r\n"), fmt.Sprintf("200 GET /g%d ", i); got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
	if got := ask("HEAD", "/h", "\r\n"); got != "200 " {
		t.Fatalf("HEAD: got %q", got)
	}
	r.s.mu.Lock()
	started := r.s.gen != nil
	r.s.mu.Unlock()
	if started {
		t.Fatal("an HTTP server was started for plain GETs and HEADs")
	}
	if got := ask("POST", "/p", "Content-Length: 4\r\n\r\nbody"); got != "200 POST /p body" {
		t.Fatalf("POST after the loop: got %q", got)
	}
	if got := ask("GET", "/last", "\r\n"); got != "200 GET /last " {
		t.Fatalf("GET after the POST: got %q", got)
	}
	r.s.mu.Lock()
	started = r.s.gen != nil
	r.s.mu.Unlock()
	if !started {
		t.Error("the POST did not go to the HTTP server")
	}
}

// TestPlainDrainRaceNextRequest: a shutdown's drain that comes between
// the worker reading a kept connection's next request and marking it
// active (forced here by testHookBeforeActive) either closes the connection
// before the request goes anywhere or lets it be answered: never is the
// request sent to the origin and its answer lost. The origin closes each
// of its connections, so its accepts count the requests that reached it.
func TestPlainDrainRaceNextRequest(t *testing.T) {
	drainRace(t, 1, "GET %s/1 HTTP/1.1\r\nHost: x\r\n\r\n", "GET %s/2 HTTP/1.1\r\nHost: x\r\n\r\n")
}

// drainRace sends reqs (each a format for the origin's URL, asking for
// /1, /2...) on one connection to a server whose drain runs when
// testHookBeforeActive is called for the drainOn-th time, and fails if a
// request left unanswered reached the origin (which closes each of its
// connections, so that its accepts count the requests it got).
func drainRace(t *testing.T, drainOn int32, reqs ...string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cl := &countingListener{Listener: ln}
	origin := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		io.WriteString(w, r.URL.Path)
	}))
	origin.Listener = cl
	origin.Start()
	defer origin.Close()

	r := startRun(t, "")
	var calls atomic.Int32
	hook := func() {
		if calls.Add(1) == drainOn {
			r.s.conns.drain()
		}
	}
	testHookBeforeActive.Store(&hook)
	defer testHookBeforeActive.Store(nil)

	c, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(c)
	for i, req := range reqs {
		path := fmt.Sprintf("/%d", i+1)
		fmt.Fprintf(c, req, origin.URL)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			if i == 0 {
				t.Fatal(err)
			}
			if n := cl.accepts.Load(); n != int32(i) {
				t.Fatalf("request %s unanswered (%v) but the origin accepted %d connections, want %d: it reached the origin", path, err, n, i)
			}
			return
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(body) != path {
			t.Fatalf("%s: %d %q", path, resp.StatusCode, body)
		}
	}
}

// countingListener counts the connections it accepts.
type countingListener struct {
	net.Listener
	accepts atomic.Int32
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.accepts.Add(1)
	}
	return c, err
}

// TestHTTPDrainRaceNextRequest: TestPlainDrainRaceNextRequest for a kept
// connection net/http's server serves (POSTs with a body): a drain
// between its reading the next request and marking it active closes it
// before the request goes anywhere, or lets it be answered. Before the
// fix net/http's background read, failing on the closed connection,
// cancelled the request's context and mostly stopped it before the dial,
// but not always: the test failed in 5 of 30 runs.
func TestHTTPDrainRaceNextRequest(t *testing.T) {
	drainRace(t, 2, "POST %s/1 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi",
		"POST %s/2 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
}

// TestPlainToHTTPDrainRace: a drain between the plain loop's reading a
// request it does not serve (a POST with a body, after a GET) and the
// HTTP server's marking it active closes the connection before the
// request goes anywhere, or lets it be answered. Before, the HTTP
// server's StateNew overwrote the drain's closed, and the request went
// out unless net/http's background read cancelled it first: the test
// failed in 2 of 30 runs.
func TestPlainToHTTPDrainRace(t *testing.T) {
	drainRace(t, 1, "GET %s/1 HTTP/1.1\r\nHost: x\r\n\r\n", "POST %s/2 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
}
