package socks

import (
	"bytes"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// TestRefuse: a client refused at a connection limit gets a protocol
// answer it can report (general failure), whatever method it offers, and
// the connection is closed.
func TestRefuse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { Refuse(c, 5*time.Second) })
		}
	})
	for _, tc := range []struct {
		name string
		send []byte
		want []byte
	}{
		{"socks5 no auth", cat(greet(0), req5(cmdConnect, "example.test", 443)), cat([]byte{5, 0}, []byte{5, 1, 0, 1, 0, 0, 0, 0, 0, 0})},
		{"socks5 user/pass only", cat(greet(2), userPass("alice", "pw"), req5(cmdConnect, "127.0.0.1", 80)), cat([]byte{5, 2}, []byte{1, 0}, []byte{5, 1, 0, 1, 0, 0, 0, 0, 0, 0})},
		{"socks5 both offered", cat(greet(0, 2), req5(cmdConnect, "127.0.0.1", 80)), cat([]byte{5, 0}, []byte{5, 1, 0, 1, 0, 0, 0, 0, 0, 0})},
		{"socks5 no acceptable method", greet(0x80), []byte{5, 0xff}},
		{"socks4", []byte{4, 1, 0, 80, 127, 0, 0, 1, 'u', 0}, []byte{0, 0x5b, 0, 0, 0, 0, 0, 0}},
		{"socks4a", []byte{4, 1, 0, 80, 0, 0, 0, 1, 0, 'a', '.', 't', 'e', 's', 't', 0}, []byte{0, 0x5b, 0, 0, 0, 0, 0, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, ln.Addr().String())
			c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.Write(tc.send); err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(c) // Refuse closes the connection
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			if !bytes.Equal(got, tc.want) {
				t.Fatalf("got % x, want % x", got, tc.want)
			}
		})
	}
}
