package test

import (
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// TestConnectHeadSlowlorisDropped: a client that trickles its CONNECT
// head, a byte every 100 ms after the first line (so that the head is
// never whole in the first read), is dropped by the handshake timeout
// (1 s here), for as long as it keeps trickling (up to 15 s); the origin
// is never dialed (its accepts are counted).
func TestConnectHeadSlowlorisDropped(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepts := make(chan struct{}, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepts <- struct{}{}
			c.Close()
		}
	}()
	p := startSluice(t, "timeouts: {handshake: 1s}\n", nil)
	c, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	closed := make(chan error, 1)
	go func() {
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		_, err := io.ReadAll(c)
		closed <- err
	}()
	io.WriteString(c, "CONNECT "+ln.Addr().String()+" HTTP/1.1\r\n")
	trickle := "X-Slow: " + strings.Repeat("a", 150) + "\r\n\r\n"
	for i := range 150 {
		select {
		case err := <-closed:
			if err != nil {
				t.Logf("closed with %v", err)
			}
			if len(accepts) != 0 {
				t.Fatal("the origin was dialed for an unfinished head")
			}
			return
		case <-time.After(100 * time.Millisecond):
		}
		c.Write([]byte{trickle[i]})
	}
	t.Fatal("a CONNECT head trickled for 15 s was not dropped (handshake: 1s)")
}
