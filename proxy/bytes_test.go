package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// TestShutdownEndsDetachedRequest: a plain request no longer ends with the
// client's FIN (it is detached from the connection's read side), so
// Shutdown must end it: a half-closed client waiting on an origin that
// never answers is closed once Shutdown stops waiting, and the origin's
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
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET http://slow.test:%s/ HTTP/1.1\r\nHost: slow.test\r\n\r\n", o.port())
	c.(*net.TCPConn).CloseWrite()
	time.Sleep(100 * time.Millisecond) // the FIN reaches the server; the request must go on

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := srv.Shutdown(ctx); err != context.DeadlineExceeded {
		t.Errorf("Shutdown = %v, want DeadlineExceeded (a request was in flight)", err)
	}
	if err := <-done; err != nil {
		t.Errorf("Serve = %v, want nil", err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	rest, err := io.ReadAll(c)
	if err != nil {
		t.Errorf("the client's connection was not closed after Shutdown: %v", err)
	}
	if strings.HasPrefix(string(rest), "HTTP/1.1 200") {
		t.Errorf("got a 200 from an origin that never answered: %q", rest)
	}
	select {
	case <-originDone:
	case <-time.After(10 * time.Second):
		t.Error("the origin's connection stayed open after Shutdown")
	}
}
