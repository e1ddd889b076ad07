package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// via is how a client reaches an origin.
type via int

const (
	viaDirect  via = iota // straight to the origin
	viaConnect            // an HTTP CONNECT tunnel
	viaSOCKS              // a SOCKS5 tunnel
	viaForward            // a TCP port forwarder: no handshake, one port per origin
)

func (v via) String() string {
	return [...]string{"direct", "HTTP CONNECT", "SOCKS5", "TCP forward"}[v]
}

// forwardAddr returns the port of a forwarder that leads to dst: table is
// what target.forwards returns, "ORIGIN=PORT,ORIGIN=PORT".
func forwardAddr(table, dst string) string {
	for table != "" {
		var e string
		e, table, _ = strings.Cut(table, ",")
		if o, l, _ := strings.Cut(e, "="); o == dst {
			return l
		}
	}
	return "no-forwarder-for-" + dst
}

// conn is a client connection with its reader: bytes that follow a proxy's
// reply in the same segment are not lost.
type conn struct {
	net.Conn
	br *bufio.Reader
}

func (c *conn) Read(p []byte) (int, error) { return c.br.Read(p) }

// open connects to dst (an IP:port) directly or through proxyAddr (for
// viaForward, a table of forwarders: see forwardAddr), with every step
// bounded by timeout. The tunnel's target is the IP literal, so
// that no proxy resolves a name.
func open(v via, proxyAddr, dst string, timeout time.Duration) (*conn, error) {
	addr := dst
	switch v {
	case viaConnect, viaSOCKS:
		addr = proxyAddr
	case viaForward:
		addr = forwardAddr(proxyAddr, dst)
	}
	nc, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, err
	}
	c := &conn{Conn: nc, br: bufio.NewReaderSize(nc, 4096)}
	nc.SetDeadline(time.Now().Add(timeout))
	switch v {
	case viaConnect:
		err = handshakeConnect(c, dst)
	case viaSOCKS:
		err = handshakeSOCKS5(c, dst)
	}
	if err != nil {
		nc.Close()
		return nil, err
	}
	nc.SetDeadline(time.Time{})
	return c, nil
}

// handshakeConnect asks for a tunnel with CONNECT and reads the 2xx reply.
func handshakeConnect(c *conn, dst string) error {
	if _, err := io.WriteString(c.Conn, "CONNECT "+dst+" HTTP/1.1\r\nHost: "+dst+"\r\n\r\n"); err != nil {
		return err
	}
	status, _, _, err := readResponseHead(c.br)
	if err != nil {
		return fmt.Errorf("CONNECT reply: %w", err)
	}
	if status/100 != 2 {
		return fmt.Errorf("CONNECT %s: status %d", dst, status)
	}
	return nil
}

// handshakeSOCKS5 asks for a tunnel with SOCKS5 (RFC 1928), no
// authentication, one step at a time as x/net/proxy and curl do.
func handshakeSOCKS5(c *conn, dst string) error {
	ap, err := netip.ParseAddrPort(dst)
	if err != nil || !ap.Addr().Is4() {
		return fmt.Errorf("socks5: %q is not an IPv4 address and port", dst)
	}
	if _, err := c.Conn.Write([]byte{5, 1, 0}); err != nil {
		return err
	}
	var b [10]byte
	if _, err := io.ReadFull(c.br, b[:2]); err != nil {
		return fmt.Errorf("socks5 method reply: %w", err)
	}
	if b[0] != 5 || b[1] != 0 {
		return fmt.Errorf("socks5: method reply %x", b[:2])
	}
	ip := ap.Addr().As4()
	req := []byte{5, 1, 0, 1, ip[0], ip[1], ip[2], ip[3], byte(ap.Port() >> 8), byte(ap.Port())}
	if _, err := c.Conn.Write(req); err != nil {
		return err
	}
	if _, err := io.ReadFull(c.br, b[:4]); err != nil {
		return fmt.Errorf("socks5 reply: %w", err)
	}
	if b[0] != 5 || b[1] != 0 {
		return fmt.Errorf("socks5: reply code %d", b[1])
	}
	var rest int
	switch b[3] {
	case 1:
		rest = 4 + 2
	case 4:
		rest = 16 + 2
	case 3:
		var l [1]byte
		if _, err := io.ReadFull(c.br, l[:]); err != nil {
			return err
		}
		rest = int(l[0]) + 2
	default:
		return fmt.Errorf("socks5: address type %d in reply", b[3])
	}
	_, err = c.br.Discard(rest)
	return err
}

// readResponseHead reads an HTTP response head: its status, its
// Content-Length (-1 when absent) and whether it says Connection: close.
func readResponseHead(br *bufio.Reader) (status int, length int64, closing bool, err error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		return 0, 0, false, err
	}
	f := bytes.Fields(line)
	if len(f) < 2 || !bytes.HasPrefix(f[0], []byte("HTTP/1.")) {
		return 0, 0, false, fmt.Errorf("bad status line %q", line)
	}
	if status, err = strconv.Atoi(string(f[1])); err != nil {
		return 0, 0, false, fmt.Errorf("bad status line %q", line)
	}
	length = -1
	for n := 0; ; n++ {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return 0, 0, false, err
		}
		if len(line) <= 2 {
			return status, length, closing, nil
		}
		if n > 100 {
			return 0, 0, false, errors.New("response head too long")
		}
		switch {
		case hasPrefixFold(line, "content-length:"):
			length, err = strconv.ParseInt(string(bytes.TrimSpace(line[len("content-length:"):])), 10, 64)
			if err != nil {
				return 0, 0, false, fmt.Errorf("bad %q", line)
			}
		case hasPrefixFold(line, "transfer-encoding:"):
			return 0, 0, false, fmt.Errorf("unexpected %q", bytes.TrimSpace(line))
		case hasPrefixFold(line, "connection:") && bytes.Contains(bytes.ToLower(line), []byte("close")):
			closing = true
		}
	}
}

// get sends one GET for path (an absolute URI through an HTTP proxy) and
// checks that the answer is the origin's 1 KiB body, byte for byte. buf
// holds at least 1 KiB. It reports whether the response closes the
// connection.
func get(c *conn, target, host string, close bool, buf []byte) (closing bool, err error) {
	req := "GET " + target + " HTTP/1.1\r\nHost: " + host + "\r\n"
	if close {
		req += "Connection: close\r\n"
	}
	if _, err := io.WriteString(c.Conn, req+"\r\n"); err != nil {
		return false, err
	}
	status, length, closing, err := readResponseHead(c.br)
	if err != nil {
		return false, err
	}
	if status != 200 || length != int64(len(body)) {
		return false, fmt.Errorf("status %d, length %d", status, length)
	}
	if _, err := io.ReadFull(c.br, buf[:len(body)]); err != nil {
		return false, err
	}
	if !bytes.Equal(buf[:len(body)], body) {
		return false, errMismatch
	}
	return closing, nil
}

// errMismatch means bytes arrived that the origin did not send.
var errMismatch = errors.New("bytes differ from what the origin sent")
