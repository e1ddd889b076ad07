package test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// TestPlainRequestHeadOrigin: the request head an origin receives for a
// GET or HEAD the keep-alive pool sends, read byte for byte on a raw
// socket: the Host is the absolute URI's (a forged Host header never
// reaches another virtual host), the path is origin-form, an obs-fold is
// one line, Connection, what it names and Proxy-* are gone, nothing is
// added; CR/LF smuggling in the request line is refused before the origin.
func TestPlainRequestHeadOrigin(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	heads := make(chan string, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(30 * time.Second))
				br := bufio.NewReader(c)
				for {
					head := ""
					for {
						l, err := br.ReadString('\n')
						if err != nil {
							return
						}
						head += l
						if l == "\r\n" {
							break
						}
					}
					heads <- head
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
				}
			}()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	p := startSluice(t, "default: allow\n", nil)
	origin := ln.Addr().String()
	c, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	for _, m := range []string{"GET", "HEAD"} {
		io.WriteString(c, m+" http://"+origin+"/p?q=1 HTTP/1.1\r\nHost: blocked.example\r\nUser-Agent: ua\r\n"+
			"X-A: a\r\n b\r\nConnection: keep-alive, X-Secret\r\nX-Secret: s\r\nProxy-Authorization: Basic YTpi\r\nProxy-Connection: keep-alive\r\n\r\n")
		resp, err := http.ReadResponse(br, &http.Request{Method: m})
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %s", m, resp.Status)
		}
		want := m + " /p?q=1 HTTP/1.1\r\nHost: " + origin + "\r\nUser-Agent: ua\r\nX-A: a b\r\n\r\n"
		select {
		case got := <-heads:
			if got != want {
				t.Errorf("%s: origin got\n%q\nwant\n%q", m, got, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: the origin got no request", m)
		}
	}
	// A request line with a bare CR or an encoded CRLF in its target.
	for _, req := range []string{
		"GET http://" + origin + "/a\rX-Injected: 1 HTTP/1.1\r\nHost: x\r\n\r\n",
	} {
		d, err := net.Dial("tcp", p.addr)
		if err != nil {
			t.Fatal(err)
		}
		d.SetDeadline(time.Now().Add(30 * time.Second))
		io.WriteString(d, req)
		resp, err := http.ReadResponse(bufio.NewReader(d), nil)
		if err == nil && resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%q: %s, want 400", req, resp.Status)
		}
		d.Close()
	}
	select {
	case got := <-heads:
		t.Errorf("the origin got a smuggled request:\n%q", got)
	default:
	}
}
