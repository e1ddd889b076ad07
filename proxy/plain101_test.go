package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"testing"
)

// TestPlainUnaskedSwitchingProtocols: an origin that answers a request
// without Upgrade (the proxy removed it) with 101 Switching Protocols
// gets 502: the client asked for no protocol switch, and a 101 relayed
// without a tunnel would leave the client's connection in a protocol
// nobody speaks (RFC 9110 15.2.2; Squid refuses it too). The client's
// connection still serves its next request.
func TestPlainUnaskedSwitchingProtocols(t *testing.T) {
	f := newFixture(t, nil)
	o := newOrigin(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			r, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			io.Copy(io.Discard, r.Body)
			if r.URL.Path == "/switch" {
				io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: evil\r\nConnection: Upgrade\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nforged")
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	c := f.raw(t)
	br := bufio.NewReader(c)
	for _, m := range []string{"GET", "POST"} {
		req := m + " http://sw.test:" + o.port() + "/switch HTTP/1.1\r\nHost: sw.test:" + o.port() + "\r\nContent-Length: 0\r\n\r\n"
		if _, err := io.WriteString(c, req); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: %v", m, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadGateway {
			t.Fatalf("%s: %s, want 502", m, resp.Status)
		}
	}
	io.WriteString(c, "GET http://sw.test:"+o.port()+"/ HTTP/1.1\r\nHost: sw.test:"+o.port()+"\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(b) != "ok" {
		t.Errorf("next request: %s %q", resp.Status, b)
	}
}
