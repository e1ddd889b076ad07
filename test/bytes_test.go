package test

// Exact bytes on every fault (issue 10): origins written here cut a body
// short or trickle it, a real squid refuses by its own policy, and clients
// half-close after their request. Clients are the real curl and nc, and
// raw sockets.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice/proxy/dial/dialtest"
)

// rawOrigin is a loopback TCP server that reads one request head and
// hands the connection (and its reader, which may hold more bytes) to
// serve. It counts TCP accepts.
type rawOrigin struct {
	ln      net.Listener
	port    string
	accepts atomic.Int64
}

func newRawOrigin(t *testing.T, serve func(c net.Conn, br *bufio.Reader, requestLine string)) *rawOrigin {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o := &rawOrigin{ln: ln}
	_, o.port, _ = net.SplitHostPort(ln.Addr().String())
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			o.accepts.Add(1)
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(30 * time.Second))
				br := bufio.NewReader(c)
				line, err := br.ReadString('\n')
				if err != nil {
					return
				}
				for {
					h, err := br.ReadString('\n')
					if err != nil {
						return
					}
					if h == "\r\n" || h == "\n" {
						break
					}
				}
				serve(c, br, strings.TrimSpace(line))
			}()
		}
	}()
	return o
}

// cutOrigin answers with head and body, then closes the connection in
// the middle of the body.
func cutOrigin(t *testing.T, head, body string) *rawOrigin {
	return newRawOrigin(t, func(c net.Conn, _ *bufio.Reader, _ string) {
		io.WriteString(c, head+body)
		time.Sleep(50 * time.Millisecond) // let the bytes go out before the FIN
	})
}

const bytesConfig = "default: allow\nhosts:\n  cut.test: 127.0.0.1\n"

// TestTruncatedBodyAborts: a chunked or Content-Length body that the origin
// cuts short must reach the client as a truncated response (curl exit 18,
// as directly), never as a complete-looking one (a final 0 chunk).
func TestTruncatedBodyAborts(t *testing.T) {
	p := startSluice(t, bytesConfig, nil)
	cases := []struct {
		name, head, body string
	}{
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n",
			"a\r\n0123456789\r\n10\r\nabcdef"}, // the second chunk announces 16 bytes, 6 come
		{"content-length", "HTTP/1.1 200 OK\r\nContent-Length: 100\r\nContent-Type: text/plain\r\n\r\n",
			"0123456789abcdef"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := cutOrigin(t, tc.head, tc.body)
			url := "http://cut.test:" + o.port + "/"
			_, direct := curl(t, "--resolve", "cut.test:"+o.port+":127.0.0.1", url)
			if direct != 18 {
				t.Fatalf("directly, curl exit %d, want 18 (the origin is not cutting)", direct)
			}
			out, code := curl(t, "-x", "http://"+p.addr, url)
			if code != 18 {
				t.Errorf("through sluice, curl exit %d, want 18 (truncation hidden):\n%s", code, out)
			}
			if !strings.Contains(out, "0123456789") {
				t.Errorf("the bytes before the cut were lost:\n%s", out)
			}
			// A raw client sees no terminating chunk and a closed connection.
			c, err := net.Dial("tcp", p.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(20 * time.Second))
			fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: cut.test:%s\r\n\r\n", url, o.port)
			raw, err := io.ReadAll(c)
			if err != nil {
				t.Fatalf("reading the response: %v (sluice kept the connection open?)\n%q", err, raw)
			}
			if bytes.HasSuffix(raw, []byte("0\r\n\r\n")) {
				t.Errorf("sluice completed a truncated chunked body:\n%q", raw)
			}
			if !bytes.Contains(raw, []byte("0123456789")) {
				t.Errorf("the bytes before the cut were lost:\n%q", raw)
			}
		})
	}
	p.waitLog(t, `"msg":"access".*"target":"cut.test:.*"err":".*unexpected EOF`)
}

// TestSlowContentLengthStreams: a Content-Length response that trickles
// at 1 byte/s is forwarded as it arrives: the status line and the first
// body bytes reach the client while the origin still holds the rest back
// (it sends the rest only once the client has them).
func TestSlowContentLengthStreams(t *testing.T) {
	p := startSluice(t, bytesConfig, nil)
	const body = "0123456789"
	release := make(chan struct{})
	o := newRawOrigin(t, func(c net.Conn, _ *bufio.Reader, _ string) {
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nContent-Type: text/plain\r\n\r\n", len(body))
		for i := range len(body) {
			if i == 3 {
				select {
				case <-release:
				case <-time.After(20 * time.Second):
				}
			}
			if _, err := c.Write([]byte{body[i]}); err != nil {
				return
			}
			time.Sleep(time.Second)
		}
	})
	c, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(15 * time.Second)) // well before the origin gives up waiting
	fmt.Fprintf(c, "GET http://cut.test:%s/ HTTP/1.1\r\nHost: cut.test\r\n\r\n", o.port)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no status line while the body is incomplete: %v", err)
	}
	var first [3]byte
	if _, err := io.ReadFull(resp.Body, first[:]); err != nil {
		t.Fatalf("the first body bytes were held back: %v", err)
	}
	close(release)
	c.SetDeadline(time.Now().Add(30 * time.Second))
	rest, err := io.ReadAll(resp.Body)
	if err != nil || string(first[:])+string(rest) != body {
		t.Fatalf("body %q%q, err %v; want %q", first, rest, err, body)
	}
}

// TestHalfClosedClientServed: a client that half-closes right after its
// request (nc -q, which shuts its write side down at the end of its input)
// is served like one that keeps its side open, for plain HTTP and for
// CONNECT followed by bytes. The parent proxy every request goes through
// answers only after a pause, so the client's FIN reaches Sluice while it
// is still dialing or waiting for the response.
func TestHalfClosedClientServed(t *testing.T) {
	nc := requireTool(t, "nc")
	parent := newRawOrigin(t, func(c net.Conn, br *bufio.Reader, line string) {
		time.Sleep(500 * time.Millisecond)
		if strings.HasPrefix(line, "GET http://half.test/") {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 18\r\nConnection: close\r\n\r\nhello, half-closer")
			return
		}
		if !strings.HasPrefix(line, "CONNECT half.test:443 ") {
			io.WriteString(c, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
			return
		}
		// Be the tunnel's far end: read until the client's FIN comes
		// through, then answer.
		io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
		got, _ := io.ReadAll(br)
		fmt.Fprintf(c, "tunnel got %q", got)
	})
	p := startSluice(t, "default: allow\nupstreams:\n  slow: http://127.0.0.1:"+parent.port+"\nupstream: slow\n", nil)
	cases := []struct{ name, input, want string }{
		{"plain", "GET http://half.test/ HTTP/1.1\r\nHost: half.test\r\n\r\n", "hello, half-closer"},
		{"connect", "CONNECT half.test:443 HTTP/1.1\r\nHost: half.test:443\r\n\r\nping", `tunnel got "ping"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			host, port, _ := net.SplitHostPort(p.addr)
			cmd := exec.CommandContext(ctx, nc, "-q", "5", host, port)
			cmd.Stdin = strings.NewReader(tc.input)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("nc: %v\n%s", err, out)
			}
			if !strings.Contains(string(out), " 200 ") || !strings.Contains(string(out), tc.want) {
				t.Errorf("half-closed client: want 200 and %q, got:\n%s", tc.want, out)
			}
		})
	}
}

// TestUpstreamRefusal: a parent's own 403 (squid's http_access deny) to
// CONNECT is an upstream refusal, not an auth failure: HTTP 403 naming the
// upstream and the status, SOCKS5 0x02. Its 403 to a plain request is the
// parent's answer and passes through unchanged. The origin never sees a
// connection.
func TestUpstreamRefusal(t *testing.T) {
	t.Parallel() // squid takes 2 s to stop
	o := newRawOrigin(t, func(c net.Conn, _ *bufio.Reader, _ string) {
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	})
	sq := dialtest.StartSquid(t, dialtest.SquidOptions{ID: "deny-sq", Names: []string{"ok.test", "denied.test"}, Deny: []string{"denied.test"}})
	p := startSluice(t, fmt.Sprintf("default: allow\nupstreams:\n  parent: http://%s\nupstream: parent\n", sq.Addr), nil)

	// The control: an allowed name goes through squid to the origin.
	if out, code := curl(t, "-x", "http://"+p.addr, "http://ok.test:"+o.port+"/"); code != 0 || out != "ok" {
		t.Fatalf("through squid: curl exit %d: %s", code, out)
	}
	before := o.accepts.Load()

	target := "denied.test:" + o.port
	_, _, resp := rawConnect(t, p.addr, target)
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 8192))
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), "upstream parent refused "+target) ||
		!strings.Contains(string(body), "403") || strings.Contains(string(body), "auth") {
		t.Errorf("CONNECT refused by the parent: want 403 naming upstream parent and the status, got %s:\n%s", resp.Status, body)
	}

	if code := socks5Reply(t, p.addr, "denied.test", atoi(o.port)); code != 0x02 {
		t.Errorf("SOCKS5 CONNECT refused by the parent: reply 0x%02x, want 0x02", code)
	}

	out, _ := curl(t, "-i", "-x", "http://"+p.addr, "http://"+target+"/")
	if !strings.HasPrefix(out, "HTTP/1.1 403") || !strings.Contains(out, "ERR_ACCESS_DENIED") {
		t.Errorf("plain request refused by the parent: want squid's own 403 passed through, got:\n%s", out)
	}
	if n := o.accepts.Load(); n != before {
		t.Errorf("the origin accepted %d connections for refused requests", n-before)
	}
	p.waitLog(t, `"target":"denied.test:[0-9]+".*"err":"[^"]*upstream refused`)
	if strings.Contains(p.Log(), "upstream auth failed") {
		t.Errorf("a refusal was logged as an auth failure:\n%s", p.Log())
	}
}

// socks5Reply sends a SOCKS5 CONNECT to host:port (a name) and returns the
// reply code.
func socks5Reply(t *testing.T, proxy, host string, port int) byte {
	t.Helper()
	c, err := net.DialTimeout("tcp", proxy, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(15 * time.Second))
	req := []byte{5, 1, 0, 5, 1, 0, 3, byte(len(host))}
	req = append(req, host...)
	req = binary.BigEndian.AppendUint16(req, uint16(port))
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
	var head [4]byte
	if _, err := io.ReadFull(c, head[:2]); err != nil || head[:2][1] != 0 {
		t.Fatalf("SOCKS5 greeting: %v %x", err, head[:2])
	}
	if _, err := io.ReadFull(c, head[:]); err != nil {
		t.Fatalf("SOCKS5 reply: %v", err)
	}
	return head[1]
}
