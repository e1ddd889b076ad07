package sniff

import (
	"bytes"
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// cutConn splits its first Write into two writes at cut, with a pause.
type cutConn struct {
	net.Conn
	cut  int
	done bool
}

func (c *cutConn) Write(p []byte) (int, error) {
	if c.done || len(p) <= c.cut {
		return c.Conn.Write(p)
	}
	c.done = true
	n, err := c.Conn.Write(p[:c.cut])
	if err != nil {
		return n, err
	}
	time.Sleep(20 * time.Millisecond)
	m, err := c.Conn.Write(p[c.cut:])
	return n + m, err
}

// handshakeThrough runs a crypto/tls client over wrap(client end) and
// sniffs its ClientHello at the server end.
func handshakeThrough(t *testing.T, cfg *tls.Config, wrap func(net.Conn) net.Conn) Result {
	t.Helper()
	client, server := loopback(t)
	client.SetDeadline(time.Now().Add(10 * time.Second))
	done := make(chan struct{})
	go func() {
		defer close(done)
		tls.Client(wrap(client), cfg).Handshake() // ends when the test closes the conn
	}()
	r := Read(server, Options{})
	client.Close()
	<-done
	return r
}

func TestReadCryptoTLS(t *testing.T) {
	cfg := &tls.Config{ServerName: "blocked.test", InsecureSkipVerify: true}
	want := clientHello(t, cfg.Clone())
	cases := []struct {
		name string
		wrap func(net.Conn) net.Conn
	}{
		{"one write", func(c net.Conn) net.Conn { return c }},
		{"split in the record header", func(c net.Conn) net.Conn { return &cutConn{Conn: c, cut: 3} }},
		{"split in the handshake header", func(c net.Conn) net.Conn { return &cutConn{Conn: c, cut: 7} }},
		{"split in the middle", func(c net.Conn) net.Conn { return &cutConn{Conn: c, cut: len(want) / 2} }},
		{"split before the last byte", func(c net.Conn) net.Conn { return &cutConn{Conn: c, cut: len(want) - 1} }},
		{"one byte at a time", func(c net.Conn) net.Conn { return &splitConn{Conn: c, size: 1} }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := handshakeThrough(t, cfg.Clone(), tc.wrap)
			if r.Proto != TLS || r.Name != "blocked.test" || r.ECH || r.Err != nil {
				t.Fatalf("got proto %v name %q ech %v err %v; want tls blocked.test", r.Proto, r.Name, r.ECH, r.Err)
			}
			// The bytes are the client's, unchanged (their random differs
			// from want's, so compare the record header and the length).
			if len(r.Data) != len(want) || !bytes.Equal(r.Data[:3], want[:3]) {
				t.Fatalf("read %d bytes starting % x; a ClientHello of %d bytes starts % x", len(r.Data), r.Data[:min(3, len(r.Data))], len(want), want[:3])
			}
		})
	}
}

func TestReadECH(t *testing.T) {
	cfg := &tls.Config{
		ServerName:                     "hidden.test",
		MinVersion:                     tls.VersionTLS13,
		EncryptedClientHelloConfigList: echConfigList(t, "public.test"),
	}
	r := handshakeThrough(t, cfg, func(c net.Conn) net.Conn { return &cutConn{Conn: c, cut: 100} })
	if r.Proto != TLS || !r.ECH || r.Name != "public.test" || r.Err != nil {
		t.Fatalf("got proto %v name %q ech %v err %v; want tls, ECH, public.test", r.Proto, r.Name, r.ECH, r.Err)
	}
	if bytes.Contains(r.Data, []byte("hidden.test")) {
		t.Fatal("the inner name is visible: ECH was not used")
	}
}

func TestReadNoSNI(t *testing.T) {
	// crypto/tls sends no server_name for an IP address.
	r := handshakeThrough(t, &tls.Config{ServerName: "192.0.2.1", InsecureSkipVerify: true}, func(c net.Conn) net.Conn { return c })
	if r.Proto != TLS || r.Name != "" || !errors.Is(r.Err, ErrNoName) {
		t.Fatalf("got proto %v name %q err %v; want tls without name", r.Proto, r.Name, r.Err)
	}
}

func TestParseHello(t *testing.T) {
	real := clientHello(t, &tls.Config{ServerName: "blocked.test"})
	msg := real[recordHeaderLen:] // crypto/tls sends one record
	noExt := helloMsg()
	noExt = append([]byte{1, 0, 0, byte(len(noExt) - 6)}, noExt[4:len(noExt)-2]...) // without the extensions field
	huge := helloMsg(sni("big.test"), ext{0x15, make([]byte, MaxHello)})            // padding
	cases := []struct {
		name  string
		in    []byte
		proto Proto
		host  string
		err   error
		more  bool // incomplete: Parse must ask for more
	}{
		{"crypto/tls", real, TLS, "blocked.test", nil, false},
		{"one-byte records", records(msg, 1), TLS, "blocked.test", nil, false},
		{"seven-byte records", records(msg, 7), TLS, "blocked.test", nil, false},
		{"empty records between", append(append([]byte{22, 3, 1, 0, 0}, records(msg[:10], 10)...), append([]byte{22, 3, 1, 0, 0}, records(msg[10:], 1000)...)...), TLS, "blocked.test", nil, false},
		{"followed by other records", append(append([]byte{}, real...), 20, 3, 3, 0, 1, 1), TLS, "blocked.test", nil, false},
		{"trailing bytes in the record", records(append(append([]byte{}, msg...), 1, 2, 3), 1<<14), TLS, "blocked.test", nil, false},
		{"hand-built", records(helloMsg(sni("a.test")), 100), TLS, "a.test", nil, false},
		{"no extensions", records(noExt, 100), TLS, "", ErrNoName, false},
		{"no server_name", records(helloMsg(ext{10, []byte{0, 2, 0, 29}}), 100), TLS, "", ErrNoName, false},
		{"two host names", records(helloMsg(sni("blocked.test", "allowed.test")), 100), TLS, "", ErrAmbiguous, false},
		{"duplicate server_name", records(helloMsg(sni("a.test"), sni("b.test")), 100), TLS, "", ErrMalformed, false},
		{"empty host name", records(helloMsg(sni("")), 100), TLS, "", ErrMalformed, false},
		{"space in host name", records(helloMsg(sni("a b.test")), 100), TLS, "", ErrMalformed, false},
		{"ECH", records(helloMsg(sni("public.test"), ext{extEncryptedHello, []byte{0}}), 100), TLS, "public.test", nil, false},
		{"too large", records(huge, 1<<14), TLS, "", ErrTooLarge, false},
		{"too large, header only", records(huge, 1<<14)[:9], TLS, "", ErrTooLarge, false},
		{"not a ClientHello", records([]byte{2, 0, 0, 1, 0}, 100), TLS, "", ErrMalformed, false},
		{"alert inside", append(records(msg[:10], 10), 21, 3, 1, 0, 2, 2, 40), TLS, "", ErrMalformed, false},
		{"record version 2", []byte{22, 2, 0, 0, 5, 1, 0, 0, 1, 0}, TLS, "", ErrMalformed, false},
		{"record too long", []byte{22, 3, 1, 0x40, 1}, TLS, "", ErrMalformed, false},
		{"half a record", real[:len(real)/2], TLS, "", nil, true},
		{"record header only", real[:5], TLS, "", nil, true},
		{"one byte", real[:1], TLS, "", nil, true},
		{"http", []byte("GET / HTTP/1.1\r\nHost: blocked.test\r\n\r\n"), HTTP, "blocked.test", nil, false},
		{"ssh", []byte("SSH-2.0-OpenSSH_9.6\r\n"), Other, "", nil, false},
		{"h2 preface", []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), HTTP, "", ErrNoName, false},
		{"irc", []byte("NICK me\r\nUSER me 0 * :me\r\n"), Other, "", nil, false},
		{"redis inline", []byte("PING\r\n"), Other, "", nil, false},
		{"http/0.9", []byte("GET /\r\n\r\n"), Other, "", nil, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, done := Parse(tc.in)
			if done == tc.more {
				t.Fatalf("done = %v (err %v)", done, r.Err)
			}
			if tc.more {
				return
			}
			if r.Proto != tc.proto || r.Name != tc.host || !errors.Is(r.Err, tc.err) || (tc.err == nil && r.Err != nil) {
				t.Fatalf("got %v %q err %v; want %v %q err %v", r.Proto, r.Name, r.Err, tc.proto, tc.host, tc.err)
			}
			if !bytes.Equal(r.Data, tc.in) {
				t.Fatal("Data is not the input")
			}
		})
	}
}

func TestParseHTTP(t *testing.T) {
	cases := []struct {
		name, in, host string
		err            error
		more           bool
	}{
		{"host", "GET / HTTP/1.1\r\nHost: blocked.test\r\n\r\n", "blocked.test", nil, false},
		{"host with port", "GET / HTTP/1.1\r\nhost:blocked.test:8080\r\nAccept: */*\r\n\r\nbody", "blocked.test", nil, false},
		{"ipv6 host", "GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n", "::1", nil, false},
		{"bare newlines", "GET / HTTP/1.0\nHost: a.test\n\n", "a.test", nil, false},
		{"absolute form", "GET http://blocked.test/x HTTP/1.1\r\nHost: blocked.test\r\n\r\n", "blocked.test", nil, false},
		{"absolute form with userinfo", "GET http://u:p@blocked.test:81/x HTTP/1.1\r\n\r\n", "blocked.test", nil, false},
		{"connect", "CONNECT blocked.test:443 HTTP/1.1\r\nHost: blocked.test:443\r\n\r\n", "blocked.test", nil, false},
		{"same host twice", "GET / HTTP/1.1\r\nHost: a.test\r\nHost: A.test.\r\n\r\n", "A.test.", nil, false},
		{"two hosts", "GET / HTTP/1.1\r\nHost: allowed.test\r\nHost: blocked.test\r\n\r\n", "", ErrAmbiguous, false},
		{"target and host differ", "GET http://blocked.test/ HTTP/1.1\r\nHost: allowed.test\r\n\r\n", "", ErrAmbiguous, false},
		{"space before colon", "GET / HTTP/1.1\r\nHost: allowed.test\r\nHost : blocked.test\r\n\r\n", "", ErrAmbiguous, false},
		{"no host", "GET / HTTP/1.0\r\n\r\n", "", ErrNoName, false},
		{"empty host", "GET / HTTP/1.1\r\nHost:\r\n\r\n", "", ErrMalformed, false},
		{"two spaces", "GET  /  HTTP/1.1\r\nHost: blocked.test\r\n\r\n", "blocked.test", nil, false},
		{"tabs", "GET\t/\tHTTP/1.1\r\nHost: blocked.test\r\n\r\n", "blocked.test", nil, false},
		{"lower-case method", "get / HTTP/1.1\r\nHost: blocked.test\r\n\r\n", "blocked.test", nil, false},
		{"space in target", "GET /a b HTTP/1.1\r\nHost: blocked.test\r\n\r\n", "blocked.test", nil, false},
		{"other version", "GET / HTTP/1.2\r\nHost: blocked.test\r\n\r\n", "blocked.test", nil, false},
		{"incomplete head", "GET / HTTP/1.1\r\nHost: blocked.test\r\n", "", nil, true},
		{"method only", "GE", "", nil, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, done := Parse([]byte(tc.in))
			if done == tc.more {
				t.Fatalf("done = %v", done)
			}
			if tc.more {
				return
			}
			if r.Proto != HTTP || r.Name != tc.host || !errors.Is(r.Err, tc.err) || (tc.err == nil && r.Err != nil) {
				t.Fatalf("got %v %q err %v; want http %q err %v", r.Proto, r.Name, r.Err, tc.host, tc.err)
			}
		})
	}
}

func TestReadHTTPSplit(t *testing.T) {
	client, server := loopback(t)
	req := "GET /a HTTP/1.1\r\nHost: blocked.test\r\nUser-Agent: x\r\n\r\n"
	go (&splitConn{Conn: client, size: 5}).Write([]byte(req))
	r := Read(server, Options{})
	if r.Proto != HTTP || r.Name != "blocked.test" || string(r.Data) != req {
		t.Fatalf("got %v %q %q err %v", r.Proto, r.Name, r.Data, r.Err)
	}
}

func TestReadSilentClient(t *testing.T) {
	_, server := loopback(t)
	r := Read(server, Options{Wait: 50 * time.Millisecond})
	if r.Proto != None || len(r.Data) != 0 || r.Err != nil {
		t.Fatalf("got %v %q err %v; want none", r.Proto, r.Data, r.Err)
	}
	// The deadline is cleared: the conn is usable afterwards.
	if err := server.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
}

func TestReadStall(t *testing.T) {
	client, server := loopback(t)
	hello := clientHello(t, &tls.Config{ServerName: "blocked.test"})
	client.Write(hello[:20]) // then nothing
	r := Read(server, Options{Wait: time.Second, Timeout: 200 * time.Millisecond})
	if r.Proto != TLS || r.Name != "" || !errors.Is(r.Err, ErrTruncated) || len(r.Data) != 20 {
		t.Fatalf("got %v %q err %v, %d bytes; want truncated tls with 20 bytes", r.Proto, r.Name, r.Err, len(r.Data))
	}
}

func TestReadEOF(t *testing.T) {
	client, server := loopback(t)
	client.Write([]byte("GET / HTTP/1.1\r\nHost: a"))
	client.(*net.TCPConn).CloseWrite()
	r := Read(server, Options{})
	if r.Proto != HTTP || !errors.Is(r.Err, ErrTruncated) || string(r.Data) != "GET / HTTP/1.1\r\nHost: a" {
		t.Fatalf("got %v %q err %v", r.Proto, r.Data, r.Err)
	}
}

func TestReadBound(t *testing.T) {
	client, server := loopback(t)
	go client.Write([]byte("GET / HTTP/1.1\r\nX: " + strings.Repeat("a", 2*MaxBytes)))
	r := Read(server, Options{})
	if r.Proto != HTTP || !errors.Is(r.Err, ErrTooLarge) || len(r.Data) != MaxBytes {
		t.Fatalf("got %v err %v, %d bytes; want too large at %d", r.Proto, r.Err, len(r.Data), MaxBytes)
	}
}

// deadlineConn counts SetReadDeadline calls.
type deadlineConn struct {
	net.Conn
	n int
}

func (c *deadlineConn) SetReadDeadline(d time.Time) error {
	c.n++
	return c.Conn.SetReadDeadline(d)
}

// TestReadWholeHelloMovesNoDeadline: a ClientHello that comes in one read
// (the usual case) sets the wait's deadline and clears it, nothing more:
// each deadline is a runtime timer moved per sniffed tunnel. A split one
// still gets the longer timeout after its first bytes (TestReadStall).
func TestReadWholeHelloMovesNoDeadline(t *testing.T) {
	client, server := loopback(t)
	client.Write(clientHello(t, &tls.Config{ServerName: "blocked.test"}))
	c := &deadlineConn{Conn: server}
	r := Read(c, Options{})
	if r.Proto != TLS || r.Name != "blocked.test" || r.Err != nil {
		t.Fatalf("got %v %q err %v", r.Proto, r.Name, r.Err)
	}
	if c.n != 2 {
		t.Errorf("%d read deadlines set, want 2 (the wait's and its clearing)", c.n)
	}
}
