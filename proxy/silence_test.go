package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// readHead reads a request head (and a Content-Length body) from c.
func readHead(c net.Conn) (*http.Request, *bufio.Reader, error) {
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	if err != nil {
		return nil, nil, err
	}
	_, err = io.Copy(io.Discard, req.Body)
	return req, br, err
}

// An origin that accepts a plain request and never answers is given up
// after timeouts.idle: the client gets a 504, not a hang (before, the
// handler waited as long as the origin kept the connection).
func TestPlainSilentOriginTimesOut(t *testing.T) {
	f := newFixture(t, func(s *Server) { s.IdleTimeout = 300 * time.Millisecond })
	o := newOrigin(t, func(c net.Conn) {
		readHead(c)
		io.Copy(io.Discard, c) // accepts, reads the request, says nothing
	})
	c := f.client(t, nil)
	c.Timeout = 10 * time.Second // the origin's own deadline is 20 s
	resp, err := c.Get("http://silent.test:" + o.port() + "/")
	if err != nil {
		t.Fatalf("GET: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusGatewayTimeout {
		t.Errorf("status %d (%q); want 504", resp.StatusCode, b)
	}
}

// An origin that stops in the middle of its body: after timeouts.idle the
// client sees the answer cut, never a complete one.
func TestPlainSilentBodyIsCut(t *testing.T) {
	f := newFixture(t, func(s *Server) { s.IdleTimeout = 300 * time.Millisecond })
	o := newOrigin(t, func(c net.Conn) {
		readHead(c)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
		io.Copy(io.Discard, c)
	})
	c := f.client(t, nil)
	c.Timeout = 10 * time.Second // the origin's own deadline is 20 s
	resp, err := c.Get("http://stall.test:" + o.port() + "/")
	if err != nil {
		t.Fatalf("GET: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil {
		t.Fatalf("read %d bytes and a clean end from a body cut at 10 of 100", len(b))
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("the proxy never cut the stalled body; the client gave up: %v", err)
	}
	if string(b) != "0123456789" {
		t.Errorf("got %q before the cut; want the 10 bytes the origin sent", b)
	}
}

// Bytes that keep moving, however slowly, are not silence: a body trickled
// a byte every tenth of the idle timeout, and an upload trickled the same
// way to an origin that answers only once it has it all, both complete.
func TestPlainTrickleIsNotSilence(t *testing.T) {
	const idle = time.Second
	const n = 25 // 2.5 s: two and a half idle timeouts
	f := newFixture(t, func(s *Server) { s.IdleTimeout = idle })
	down := newOrigin(t, func(c net.Conn) {
		readHead(c)
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", n)
		for range n {
			if _, err := c.Write([]byte("x")); err != nil {
				return
			}
			time.Sleep(idle / 10)
		}
	})
	resp, err := f.client(t, nil).Get("http://trickle.test:" + down.port() + "/")
	if err != nil {
		t.Fatalf("GET: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || len(b) != n {
		t.Errorf("trickled download: %d bytes, %v; want %d and no error", len(b), err, n)
	}

	up := newOrigin(t, func(c net.Conn) {
		req, _, err := readHead(c)
		if err != nil {
			return
		}
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n%02d", req.ContentLength)
	})
	pr, pw := io.Pipe()
	go func() {
		for range n {
			pw.Write([]byte("y"))
			time.Sleep(idle / 10)
		}
		pw.Close()
	}()
	req, _ := http.NewRequest(http.MethodPost, "http://upload.test:"+up.port()+"/", pr)
	req.ContentLength = n
	resp, err = f.client(t, nil).Do(req)
	if err != nil {
		t.Fatalf("POST: %v", err)
	}
	b, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || strings.TrimSpace(string(b)) != fmt.Sprint(n) {
		t.Errorf("trickled upload: %d %q, %v; want 200 %q", resp.StatusCode, b, err, fmt.Sprint(n))
	}
}
