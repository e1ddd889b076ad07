package dial

import (
	"bufio"
	"bytes"
	"io"
	"testing"
)

// FuzzReadConnectResponse feeds arbitrary bytes to the CONNECT response
// reader: it must not panic, and on success every byte after the head
// must still be readable, in order.
func FuzzReadConnectResponse(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 Connection established\r\n\r\n",
		"HTTP/1.1 200 Connection established\r\n\r\n220 banner\r\n",
		"HTTP/1.0 200 OK\r\nVia: 1.1 squid\r\n\r\nSSH-2.0-x",
		"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=x\r\nContent-Length: 3\r\n\r\nabc",
		"HTTP/1.1 502 Bad Gateway\n\n",
		"HTTP/1.1 200\r\n\r\n",
		"HTTP/2 200\r\n\r\n",
		"SOCKS\x05\x00",
		"HTTP/1.1 -12 x\r\n\r\n",
		"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		br := bufio.NewReaderSize(bytes.NewReader(in), maxConnectLine)
		code, status, err := readConnectResponse(br)
		if err != nil {
			return
		}
		if code < 100 || code > 999 || len(status) < 3 {
			t.Fatalf("accepted code %d status %q", code, status)
		}
		head := bytes.Index(in, []byte("\n\n"))
		if i := bytes.Index(in, []byte("\n\r\n")); i >= 0 && (head < 0 || i < head) {
			head = i + 3
		} else if head >= 0 {
			head += 2
		}
		if head < 0 {
			t.Fatalf("accepted %q without an empty line", in)
		}
		rest, _ := io.ReadAll(br)
		if !bytes.Equal(rest, in[head:]) {
			t.Fatalf("bytes after the head: got %q, want %q", rest, in[head:])
		}
	})
}

// FuzzParseSOCKS4Reply: any 8 bytes give a verdict without panicking;
// only code 90 is granted.
func FuzzParseSOCKS4Reply(f *testing.F) {
	for _, s := range [][]byte{
		{0, 90, 0, 0, 0, 0, 0, 0},
		{0, 91, 0, 0, 0, 0, 0, 0},
		{0, 92, 0, 0, 0, 0, 0, 0},
		{0, 93, 1, 2, 3, 4, 5, 6},
		{4, 90, 0, 0, 0, 0, 0, 0},
		{5, 0},
		{},
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		fail, ok := parseSOCKS4Reply(in)
		if ok != (len(in) == 8 && (in[0] == 0 || in[0] == 4) && in[1] == socks4Granted) {
			t.Fatalf("parseSOCKS4Reply(% x) ok = %v", in, ok)
		}
		if !ok && fail.text == "" {
			t.Fatalf("failure without a reason for % x", in)
		}
	})
}

// FuzzParseSOCKS5Failure: any bytes a SOCKS5 server sent before a failed
// handshake are read without panicking, and a verdict always has a text.
func FuzzParseSOCKS5Failure(f *testing.F) {
	for _, s := range [][]byte{
		{5, 0, 5, 5, 0, 1, 0, 0, 0, 0, 0, 0},
		{5, 2, 1, 1},
		{5, 2, 1, 0, 5, 4, 0, 1},
		{5, 0xff},
		{4, 0},
		{5},
		{5, 0, 5, 0, 0, 9},
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		fail, ok := parseSOCKS5Failure(in)
		if ok && fail.text == "" {
			t.Fatalf("verdict without a reason for % x", in)
		}
		if len(in) < 2 && ok {
			t.Fatalf("verdict from %d bytes", len(in))
		}
	})
}
