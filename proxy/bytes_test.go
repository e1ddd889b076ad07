package proxy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice/proxy/dial"
)

// TestShutdownEndsDetachedRequest: a plain request no longer ends with the
// client's FIN (it is detached from the connection's read side), so
// the end of the server's base context (WithBase) must end it: a half-closed client waiting on an origin that
// never answers is closed once the base context ends, and the origin's
// connection is closed too.
func TestShutdownEndsDetachedRequest(t *testing.T) {
	originDone := make(chan struct{})
	o := newOrigin(t, func(c net.Conn) {
		defer close(originDone)
		br := bufio.NewReader(c)
		for { // the request head, then silence until Sluice hangs up
			line, err := br.ReadString('\n')
			if err != nil || line == "\r\n" {
				break
			}
		}
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		io.Copy(io.Discard, c)
	})
	srv := &Server{Policy: &testPolicy{}, Dial: (&testDial{}).Dial}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, stop := serve(srv, ln)
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET http://slow.test:%s/ HTTP/1.1\r\nHost: slow.test\r\n\r\n", o.port())
	c.(*net.TCPConn).CloseWrite()
	time.Sleep(100 * time.Millisecond) // the FIN reaches the server; the request must go on

	// The server's grace period is over: its base context ends, and with
	// it the detached request.
	if err := stop(); err != nil {
		t.Errorf("Serve = %v, want nil", err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	rest, err := io.ReadAll(c)
	if err != nil {
		t.Errorf("the client's connection was not closed: %v", err)
	}
	if strings.HasPrefix(string(rest), "HTTP/1.1 200") {
		t.Errorf("got a 200 from an origin that never answered: %q", rest)
	}
	select {
	case <-originDone:
	case <-time.After(10 * time.Second):
		t.Error("the origin's connection stayed open after the base context ended")
	}
}

// TestCutBodyAborts: a body the origin cuts short, chunked or with a
// Content-Length, reaches the client with what came and then a closed
// connection: no final chunk, never a complete-looking response. The
// access line says why.
func TestCutBodyAborts(t *testing.T) {
	cases := []struct{ name, head, body string }{
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "5\r\nhello\r\n10\r\nworld"},
		{"content-length", "HTTP/1.1 200 OK\r\nContent-Length: 64\r\n\r\n", "helloworld"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, nil)
			o := newOrigin(t, func(c net.Conn) {
				br := bufio.NewReader(c)
				for {
					line, err := br.ReadString('\n')
					if err != nil || line == "\r\n" {
						break
					}
				}
				io.WriteString(c, tc.head+tc.body)
			})
			c := f.raw(t)
			fmt.Fprintf(c, "GET http://cut.test:%s/ HTTP/1.1\r\nHost: cut.test\r\n\r\n", o.port())
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("reading the body: err %v, want unexpected EOF (body %q)", err, body)
			}
			if !strings.Contains(string(body), "hello") {
				t.Errorf("the bytes before the cut were lost: %q", body)
			}
			if _, err := br.ReadByte(); err != io.EOF {
				t.Errorf("the connection stayed open after the cut: %v", err)
			}
			deadline := time.Now().Add(10 * time.Second)
			for !strings.Contains(f.log.String(), "cut short") && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond) // the access line comes after the abort
			}
			if !strings.Contains(f.log.String(), `"err":"proxy: response body from cut.test:`) {
				t.Errorf("the access line does not say the body was cut short:\n%s", f.log.String())
			}
		})
	}
}

// TestUpstreamRefusedAnswer: an upstream's own refusal is a 403 naming
// the upstream and what it answered, with its text made printable.
func TestUpstreamRefusedAnswer(t *testing.T) {
	err := &dial.Error{Kind: dial.KindUpstreamRefused, Addr: "x.test:443", Upstream: "corp",
		Err: fmt.Errorf("reaching upstream: %w", errors.New("upstream answered 403 No\x1b[2J"))}
	code, msg := dialFailure("x.test:443", err)
	if want := "sluice: upstream corp refused x.test:443: upstream answered 403 No?[2J"; code != http.StatusForbidden || msg != want {
		t.Errorf("dialFailure = %d %q, want 403 %q", code, msg, want)
	}
	err.Kind = dial.KindUpstreamAuth
	if code, msg := dialFailure("x.test:443", err); code != http.StatusBadGateway || !strings.Contains(msg, "upstream auth failed") {
		t.Errorf("a 407 became %d %q, want 502 upstream auth failed", code, msg)
	}
}
