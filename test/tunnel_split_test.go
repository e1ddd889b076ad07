package test

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"
)

// TestPipelinedTunnelSplitAtEveryByte: a client that sends its whole
// handshake and its first data in one go (SOCKS5 greeting, request and
// data; a CONNECT head and data), split into two writes at every byte,
// gets every reply and its data back, and a clean end after its
// half-close: whether the handshake came in the worker's first read or
// not, and whichever goroutine (the worker or the relay's) carries each
// direction of the tunnel.
func TestPipelinedTunnelSplitAtEveryByte(t *testing.T) {
	echo := newTCPEcho(t)
	p := startSluice(t, "default: allow\n", nil)
	ap := netip.MustParseAddrPort(echo.addr)
	data := []byte("ping through the tunnel\n")
	ip := ap.Addr().As4()
	socks := append([]byte{5, 1, 0, 5, 1, 0, 1}, ip[:]...)
	socks = binary.BigEndian.AppendUint16(socks, ap.Port())
	socksReply := []byte{5, 0, 5, 0, 0, 1}
	connect := []byte("CONNECT " + echo.addr + " HTTP/1.1\r\nHost: " + echo.addr + "\r\n\r\n")
	for _, c := range []struct {
		name      string
		handshake []byte
		reply     []byte // its start: a SOCKS5 reply ends with the bound address
		replyLen  int
	}{
		{"socks5", socks, socksReply, 2 + 10},
		{"connect", connect, []byte("HTTP/1.1 200 "), len("HTTP/1.1 200 Connection established\r\n\r\n")},
	} {
		msg := append(append([]byte(nil), c.handshake...), data...)
		for split := 1; split < len(msg); split++ {
			conn, err := net.Dial("tcp", p.addr)
			if err != nil {
				t.Fatal(err)
			}
			conn.SetDeadline(time.Now().Add(10 * time.Second))
			conn.Write(msg[:split])
			time.Sleep(2 * time.Millisecond) // let the first part arrive alone
			conn.Write(msg[split:])
			conn.(*net.TCPConn).CloseWrite()
			got, err := io.ReadAll(conn)
			conn.Close()
			if err != nil || len(got) != c.replyLen+len(data) || !bytes.HasPrefix(got, c.reply) || !bytes.Equal(got[c.replyLen:], data) {
				t.Fatalf("%s split at %d: got %q, %v; want a reply of %d bytes then %q and EOF", c.name, split, got, err, c.replyLen, data)
			}
		}
	}
}
