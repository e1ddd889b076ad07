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

// TestKeepAliveCloseIdleInFlight: a request whose answer is still being
// read when CloseIdleConnections runs (a reload, a shutdown) does not put
// its connection back in the pool at its end: the connection is closed
// then, as http.Transport closes connections that become idle after
// CloseIdleConnections until a new request comes. A new request undoes it.
func TestKeepAliveCloseIdleInFlight(t *testing.T) {
	ended := make(chan struct{}, 2)
	o := newScriptedOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		for {
			req, ok := readReq(br)
			if !ok {
				ended <- struct{}{}
				return
			}
			if req.URL.Path == "/slow" {
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nok")
				time.Sleep(50 * time.Millisecond)
				io.WriteString(c, "ok")
				continue
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	tr, r := directTransport(t)
	addr := o.ln.Addr().String()
	req, _ := http.NewRequest("GET", "http://"+addr+"/slow", nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	r.CloseIdleConnections() // the answer's body is still to come
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || string(b) != "okok" {
		t.Fatalf("body %q, %v", b, err)
	}
	ka := r.direct0.ka
	ka.mu.Lock()
	n, armed := ka.n, ka.timer != nil
	ka.mu.Unlock()
	if n != 0 || armed {
		t.Errorf("after CloseIdleConnections: %d idle connections kept, sweep armed %v; want none", n, armed)
	}
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the connection that became idle after CloseIdleConnections stayed open")
	}
	// A new request pools again.
	if _, _, err := fetch(context.Background(), tr, "GET", addr, "/"); err != nil {
		t.Fatal(err)
	}
	ka.mu.Lock()
	n = ka.n
	ka.mu.Unlock()
	if n != 1 {
		t.Errorf("after a new request: %d idle connections, want 1", n)
	}
}
