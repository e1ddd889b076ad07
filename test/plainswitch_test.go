package test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"
)

// TestPlainUnaskedSwitchingProtocols: an origin that answers a plain GET
// (the keep-alive pool's kind of request) or a POST (http.Transport's)
// with 101 Switching Protocols and then writes a forged answer: the
// client gets 502 for each, never the 101 nor the forged bytes, and its
// connection serves its next request. The origin's connections that
// switched are never reused (counted accepts).
func TestPlainUnaskedSwitchingProtocols(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var accepts atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepts.Add(1)
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(30 * time.Second))
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					io.Copy(io.Discard, req.Body)
					if req.URL.Path == "/switch" {
						io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged")
						continue // as if the connection were switched
					}
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				}
			}()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	p := startSluice(t, "default: allow\n", nil)
	c, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	origin := ln.Addr().String()
	for _, req := range []string{
		"GET http://" + origin + "/switch HTTP/1.1\r\nHost: " + origin + "\r\n\r\n",
		"POST http://" + origin + "/switch HTTP/1.1\r\nHost: " + origin + "\r\nContent-Length: 1\r\n\r\nx",
		"GET http://" + origin + "/switch HTTP/1.1\r\nHost: " + origin + "\r\n\r\n",
	} {
		io.WriteString(c, req)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%q: %v", req, err)
		}
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusBadGateway {
			t.Errorf("%q: %s %q, want 502", req, resp.Status, b)
		}
	}
	io.WriteString(c, "GET http://"+origin+"/ HTTP/1.1\r\nHost: "+origin+"\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := io.ReadAll(resp.Body); resp.StatusCode != 200 || string(b) != "ok" {
		t.Errorf("next request: %s %q", resp.Status, b)
	}
	if n := accepts.Load(); n != 4 {
		t.Errorf("%d origin connections, want 4 (none reused after a 101)", n)
	}
}
