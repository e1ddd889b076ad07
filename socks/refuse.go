package socks

import (
	"bytes"
	"io"
	"net"
	"net/netip"
	"time"
)

// Refuse answers a client that may not be served now (a server at its
// connection limit) and closes c: a SOCKS5 client gets its greeting
// answered and then its request failed with 0x01 (general failure), so
// that it reports a server failure rather than a protocol error; a SOCKS4
// client gets 0x5B (rejected). No credential is checked and nothing is
// dialed. The whole exchange is bounded by timeout (zero means 5s).
func Refuse(c net.Conn, timeout time.Duration) {
	defer c.Close()
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	c.SetDeadline(time.Now().Add(timeout))
	var v [1]byte
	if _, err := io.ReadFull(c, v[:]); err != nil {
		return
	}
	r := io.MultiReader(bytes.NewReader(v[:]), c)
	switch v[0] {
	case socks5Version:
		methods, err := readGreeting(r)
		if err != nil {
			return
		}
		switch {
		case bytes.IndexByte(methods, methodNoAuth) >= 0:
			if _, err := c.Write([]byte{socks5Version, methodNoAuth}); err != nil {
				return
			}
		case bytes.IndexByte(methods, methodUserPass) >= 0:
			// The credentials are read, not checked: the request fails anyway.
			if _, err := c.Write([]byte{socks5Version, methodUserPass}); err != nil {
				return
			}
			if _, _, err := readUserPass(r); err != nil {
				return
			}
			if _, err := c.Write([]byte{authVersion, authSuccess}); err != nil {
				return
			}
		default:
			c.Write([]byte{socks5Version, methodNoAcceptable})
			return
		}
		readRequest(r) // whatever it asked (or if it broke off), the answer is the same
		c.Write(reply5(repGeneralFailure, netip.AddrPort{}))
	case socks4Version:
		readSocks4(r)
		c.Write(reply4(socks4Rejected, netip.AddrPort{}))
	}
}
