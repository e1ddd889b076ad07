package server

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// connectVia sends head on a new connection to addr and returns the
// connection and the response read back.
func connectVia(t *testing.T, addr, head string) (net.Conn, *bufio.Reader, *http.Response) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, head); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		t.Fatalf("response to %q: %v", head, err)
	}
	return c, br, resp
}

// echoLine writes a line through c and checks that it comes back.
func echoLine(t *testing.T, c net.Conn, br *bufio.Reader, line string) {
	t.Helper()
	if _, err := io.WriteString(c, line); err != nil {
		t.Fatal(err)
	}
	got, err := br.ReadString('\n')
	if err != nil || got != line {
		t.Fatalf("echo: %q, %v; want %q", got, err, line)
	}
}

// TestConnectOnWorker: a CONNECT whose head comes in one read is served on
// the accepting worker, without the HTTP server: none is started for it.
// The bytes the client sends right behind its head (no wait for the 200)
// reach the origin first, and the tunnel echoes.
func TestConnectOnWorker(t *testing.T) {
	origin := echoOrigin(t)
	r := startRun(t, "sniff: off\n")
	c, br, resp := connectVia(t, r.addr, "CONNECT "+origin+" HTTP/1.1\r\nHost: "+origin+"\r\n\r\nearly\n")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if got, err := br.ReadString('\n'); err != nil || got != "early\n" {
		t.Fatalf("the bytes behind the head: %q, %v", got, err)
	}
	echoLine(t, c, br, "ping\n")
	r.s.mu.Lock()
	gen := r.s.gen
	r.s.mu.Unlock()
	if gen != nil {
		t.Error("an HTTP server was started for a CONNECT tunnel")
	}
}

// TestConnectRefusedKeepsConnection: a CONNECT the handler refuses (403)
// gets net/http's kind of response (Content-Length, Date, the block
// page), and the same connection then carries a CONNECT that is allowed,
// as a keep-alive connection does.
func TestConnectRefusedKeepsConnection(t *testing.T) {
	origin := echoOrigin(t)
	r := startRun(t, "sniff: off\nrules:\n  - block: [blocked.test]\n")
	c, br, resp := connectVia(t, r.addr, "CONNECT blocked.test:443 HTTP/1.1\r\nHost: blocked.test:443\r\n\r\n")
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusForbidden || resp.ContentLength != int64(len(body)) || len(body) == 0 ||
		resp.Header.Get("Date") == "" || resp.Header.Get("Content-Type") == "" || resp.Close {
		t.Fatalf("refusal: %d, length %d of %d, header %v, close %v", resp.StatusCode, resp.ContentLength, len(body), resp.Header, resp.Close)
	}
	if _, err := io.WriteString(c, "CONNECT "+origin+" HTTP/1.1\r\nHost: "+origin+"\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err = http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("second CONNECT on the connection: %v, %v", resp, err)
	}
	echoLine(t, c, br, "ping\n")
}

// TestConnectRefusedClose: "Connection: close" on a refused CONNECT
// closes the connection after the response, which says so.
func TestConnectRefusedClose(t *testing.T) {
	r := startRun(t, "rules:\n  - block: [blocked.test]\n")
	c, br, resp := connectVia(t, r.addr, "CONNECT blocked.test:443 HTTP/1.1\r\nConnection: close\r\n\r\n")
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusForbidden || !resp.Close {
		t.Fatalf("status %d, close %v", resp.StatusCode, resp.Close)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := br.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("after the response: %d bytes, %v; want EOF", n, err)
	}
}

// TestConnectLeftToHTTPServer: what the worker does not serve itself goes
// to the HTTP server as before: a head split over two reads, two
// Host headers (400 from net/http), another method starting with C.
func TestConnectLeftToHTTPServer(t *testing.T) {
	origin := echoOrigin(t)
	r := startRun(t, "sniff: off\n")

	c, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "CONNECT "+origin+" HTTP/1.1\r\n")
	time.Sleep(50 * time.Millisecond) // the first read takes the first line alone
	io.WriteString(c, "Host: "+origin+"\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("split head: %v, %v", resp, err)
	}
	echoLine(t, c, br, "ping\n")

	_, _, resp = connectVia(t, r.addr, "CONNECT "+origin+" HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n")
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("two Host headers: status %d, want 400", resp.StatusCode)
	}
	_, _, resp = connectVia(t, r.addr, "COPY http://"+origin+"/ HTTP/1.1\r\nHost: "+origin+"\r\n\r\n")
	if resp.StatusCode == http.StatusOK {
		t.Errorf("COPY: status %d", resp.StatusCode)
	}
}

func TestHasToken(t *testing.T) {
	for _, c := range []struct {
		v    []string
		want bool
	}{
		{nil, false},
		{[]string{"close"}, true},
		{[]string{"keep-alive, Close"}, true},
		{[]string{"upgrade", " close "}, true},
		{[]string{"closed"}, false},
	} {
		if got := hasToken(c.v, "close"); got != c.want {
			t.Errorf("%q: %v", c.v, got)
		}
	}
}
