package server

import (
	"bufio"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

var requestID = regexp.MustCompile(`request id [0-9a-z-]+`)

// exchangeHead sends head, then reads the response and, when it is a 200,
// as many bytes as tail has (the origin echoes them). With split, the
// first byte goes alone and the rest after a pause, so that the head is
// not whole in the first read and the HTTP server serves it.
func exchangeHead(t *testing.T, addr, head, tail string, split bool) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	msg := head + tail
	if split {
		io.WriteString(c, msg[:1])
		time.Sleep(50 * time.Millisecond)
		msg = msg[1:]
	}
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		return "no response: " + err.Error()
	}
	out := fmt.Sprintf("%d close=%v", resp.StatusCode, resp.Close)
	if resp.StatusCode != http.StatusOK {
		body, err := io.ReadAll(resp.Body)
		resp.Header.Del("Date")
		body = requestID.ReplaceAll(body, []byte("request id X"))
		out += fmt.Sprintf(" header=%v body=%q err=%v", resp.Header, body, err)
		if resp.Close {
			return out
		}
		// Kept open: the connection serves the next request.
		io.WriteString(c, "CONNECT blocked.test:443 HTTP/1.1\r\n\r\n")
		resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
		if err != nil {
			return out + " next: " + err.Error()
		}
		return out + fmt.Sprintf(" next: %d", resp.StatusCode)
	}
	got := make([]byte, len(tail))
	n, err := io.ReadFull(br, got)
	return fmt.Sprintf("%s echo=%q err=%v", out, got[:n], errKind(err))
}

// errKind names err without the addresses that differ between runs.
func errKind(err error) string {
	switch {
	case err == nil:
		return "<nil>"
	case errors.Is(err, syscall.ECONNRESET):
		return "reset"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return err.Error()
	}
	return "other"
}

// TestConnectParsedAsHTTPServerDoes: a CONNECT whose head comes whole in
// the first read (served on the worker) is answered exactly as when it
// comes in pieces (served by net/http's server): malformed request lines,
// versions, Host headers, CTLs in header names and values, bodies,
// bare-LF line ends; and the bytes behind the head reach the origin once
// and in order.
func TestConnectParsedAsHTTPServerDoes(t *testing.T) {
	o := echoOrigin(t)
	_, port, _ := strings.Cut(o, ":")
	for _, sniff := range []string{"off", "all"} {
		t.Run("sniff "+sniff, func(t *testing.T) {
			r := startRun(t, "sniff: "+sniff+"\nrules:\n  - block: [blocked.test]\n")
			compareHeads(t, r.addr, o, port)
		})
	}
}

// compareHeads runs the cases of TestConnectParsedAsHTTPServerDoes.
func compareHeads(t *testing.T, addr, o, port string) {
	tail := "tail\r\n\r\nafter the blank line\n"
	for _, c := range []struct{ name, head, tail string }{
		{"plain", "CONNECT " + o + " HTTP/1.1\r\nHost: " + o + "\r\n\r\n", tail},
		{"no Host", "CONNECT " + o + " HTTP/1.1\r\n\r\n", tail},
		{"HTTP/1.0", "CONNECT " + o + " HTTP/1.0\r\n\r\n", tail},
		{"bare LF", "CONNECT " + o + " HTTP/1.1\nHost: " + o + "\n\n", tail},
		{"bare LF then CRLF", "CONNECT " + o + " HTTP/1.1\r\nHost: " + o + "\n\n", tail},
		{"LF head, CRLF in tail", "CONNECT " + o + " HTTP/1.1\n\n", "x\r\n\r\ny\n"},
		{"Connection close", "CONNECT " + o + " HTTP/1.1\r\nConnection: close\r\n\r\n", tail},
		{"Content-Length 0", "CONNECT " + o + " HTTP/1.1\r\nContent-Length: 0\r\n\r\n", tail},
		{"Content-Length 5", "CONNECT " + o + " HTTP/1.1\r\nContent-Length: 5\r\n\r\n", "hello" + tail},
		{"chunked", "CONNECT " + o + " HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", "0\r\n\r\n" + tail},
		{"Expect", "CONNECT " + o + " HTTP/1.1\r\nExpect: 100-continue\r\n\r\n", tail},
		{"two Hosts", "CONNECT " + o + " HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n", tail},
		{"bad Host", "CONNECT " + o + " HTTP/1.1\r\nHost: a b\r\n\r\n", tail},
		{"CTL in value", "CONNECT " + o + " HTTP/1.1\r\nX-A: a\x01b\r\n\r\n", tail},
		{"space in name", "CONNECT " + o + " HTTP/1.1\r\nX A: b\r\n\r\n", tail},
		{"folded", "CONNECT " + o + " HTTP/1.1\r\nX-A: a\r\n b\r\n\r\n", tail},
		{"folded Host", "CONNECT " + o + " HTTP/1.1\r\nHost: x\r\n y\r\n\r\n", tail},
		{"folded Host, tab", "CONNECT " + o + " HTTP/1.1\r\nHost: " + o + "\r\n\tz\r\n\r\n", tail},
		{"folded Host, bare LF", "CONNECT " + o + " HTTP/1.1\nHost: x\n y\n\n", tail},
		{"HTTP/2.0", "CONNECT " + o + " HTTP/2.0\r\n\r\n", tail},
		{"HTTP/0.9", "CONNECT " + o + " HTTP/0.9\r\n\r\n", tail},
		{"HTTP/1.2", "CONNECT " + o + " HTTP/1.2\r\n\r\n", tail},
		{"no version", "CONNECT " + o + "\r\n\r\n", tail},
		{"two spaces", "CONNECT  " + o + " HTTP/1.1\r\n\r\n", tail},
		{"absolute form", "CONNECT http://" + o + "/ HTTP/1.1\r\n\r\n", tail},
		{"path", "CONNECT /x HTTP/1.1\r\n\r\n", tail},
		{"no port", "CONNECT 127.0.0.1 HTTP/1.1\r\n\r\n", tail},
		{"port too big", "CONNECT 127.0.0.1:99999 HTTP/1.1\r\n\r\n", tail},
		{"IPv6 literal", "CONNECT [::1]:" + port + " HTTP/1.1\r\n\r\n", tail},
		{"IPv6 unbracketed", "CONNECT ::1:" + port + " HTTP/1.1\r\n\r\n", tail},
		{"blocked", "CONNECT blocked.test:443 HTTP/1.1\r\n\r\n", ""},
		{"blocked, pipelined", "CONNECT blocked.test:443 HTTP/1.1\r\n\r\nCONNECT blocked.test:443 HTTP/1.1\r\n", ""},
		{"blocked HTTP/1.0", "CONNECT blocked.test:443 HTTP/1.0\r\n\r\n", ""},
		{"blocked HTTP/1.0 keep-alive", "CONNECT blocked.test:443 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", ""},
		{"blocked, close", "CONNECT blocked.test:443 HTTP/1.1\r\nConnection: close\r\n\r\n", ""},
		{"blocked, bare LF", "CONNECT blocked.test:443 HTTP/1.1\n\n", ""},
		{"lower-case method", "connect " + o + " HTTP/1.1\r\n\r\n", tail},
	} {
		whole := exchangeHead(t, addr, c.head, c.tail, false)
		split := exchangeHead(t, addr, c.head, c.tail, true)
		if whole != split {
			t.Errorf("%s: in one read: %s; in pieces (net/http): %s", c.name, whole, split)
		}
		// The origin listens on 127.0.0.1 only: with sniffing, a tunnel to
		// [::1] is answered 200 before its dial fails.
		reaches := !strings.HasPrefix(c.name, "IPv6")
		if reaches && strings.HasPrefix(whole, "200") && !strings.Contains(whole, fmt.Sprintf("echo=%q err=<nil>", c.tail)) {
			t.Errorf("%s: the bytes behind the head: %s", c.name, whole)
		}
	}
}

// TestConnectAuthAsHTTPServerDoes: the 407 of a CONNECT without (or with
// wrong or malformed) credentials is the same whether the worker or
// net/http's server parsed the head, and so is the tunnel of one with
// good credentials, with the bytes behind its head.
func TestConnectAuthAsHTTPServerDoes(t *testing.T) {
	o := echoOrigin(t)
	hash, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	r := startRunFiles(t, "sniff: off\nusers: users.htpasswd\n", map[string]string{"users.htpasswd": "alice:" + string(hash) + "\n"})
	basic := func(up string) string {
		return "Proxy-Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte(up)) + "\r\n"
	}
	tail := "tail\r\n\r\nafter the blank line\n"
	for _, c := range []struct{ name, auth, tail string }{
		{"none", "", ""},
		{"wrong password", basic("alice:nope"), ""},
		{"unknown user", basic("bob:pw"), ""},
		{"not base64", "Proxy-Authorization: Basic !!!\r\n", ""},
		{"other scheme", "Proxy-Authorization: Bearer x\r\n", ""},
		{"good", basic("alice:pw"), tail},
	} {
		head := "CONNECT " + o + " HTTP/1.1\r\nHost: " + o + "\r\n" + c.auth + "\r\n"
		whole := exchangeHead(t, r.addr, head, c.tail, false)
		split := exchangeHead(t, r.addr, head, c.tail, true)
		if whole != split {
			t.Errorf("%s: in one read: %s; in pieces (net/http): %s", c.name, whole, split)
		}
		want := "407"
		if c.tail != "" {
			want = "200"
		}
		if !strings.HasPrefix(whole, want) || c.tail != "" && !strings.Contains(whole, fmt.Sprintf("echo=%q err=<nil>", c.tail)) {
			t.Errorf("%s: %s; want %s", c.name, whole, want)
		}
		if strings.Contains(whole, "pw") || strings.Contains(whole, "alice") {
			t.Errorf("%s: the response names the credentials: %s", c.name, whole)
		}
	}
}

// TestConnectRefusedDuringShutdownCloses: a connection accepted before a
// shutdown whose CONNECT comes after it and is refused is closed after the
// response, which says so, as net/http's server (keep-alives off) does: a
// kept connection would hold the drain.
func TestConnectRefusedDuringShutdownCloses(t *testing.T) {
	r := startRun(t, "shutdown_grace: 20s\nrules:\n  - block: [blocked.test]\n")
	c, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitFor(t, "the connection to be accepted", func() bool { return r.open() >= 1 })
	r.cancel()
	waitFor(t, "shutting down", func() bool { return strings.Contains(r.log.String(), "shutting down") })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "CONNECT blocked.test:443 HTTP/1.1\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil || resp.StatusCode != http.StatusForbidden || !resp.Close {
		t.Fatalf("refused CONNECT during the shutdown: %v, %v; want 403 and Connection: close", resp, err)
	}
	io.Copy(io.Discard, resp.Body)
	if n, err := br.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("after the response: %d bytes, %v; want EOF", n, err)
	}
}

// TestSniffedTunnelCutAfter200IsReset: a sniffed CONNECT is answered 200
// before anything is dialed; when the sniffed name is blocked, or the
// dial then fails, the client must see a reset, not the clean end of a
// tunnel it was told is established (SOCKS cuts the same way).
func TestSniffedTunnelCutAfter200IsReset(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedPort := ln.Addr().String()
	ln.Close() // nothing listens there: the dial is refused
	o := echoOrigin(t)
	r := startRun(t, "sniff: all\nrules:\n  - block: [blocked.test]\n")
	for _, c := range []struct{ name, target, first string }{
		{"sniffed name blocked", o, "GET / HTTP/1.1\r\nHost: blocked.test\r\n\r\n"},
		{"dial fails", closedPort, "GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n"},
	} {
		conn, br, resp := connectVia(t, r.addr, "CONNECT "+c.target+" HTTP/1.1\r\n\r\n")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: status %d, want 200 before sniffing", c.name, resp.StatusCode)
		}
		io.WriteString(conn, c.first)
		n, err := io.Copy(io.Discard, br)
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("%s: the client read %d bytes and %v, want a reset", c.name, n, err)
		}
	}
}
