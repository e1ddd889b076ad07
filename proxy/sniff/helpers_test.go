package sniff

import (
	"crypto/ecdh"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/cryptobyte"
)

// captureConn is a net.Conn that keeps what is written to it and fails every
// read: it takes a ClientHello from a crypto/tls client without a server.
type captureConn struct {
	net.Conn // nil: the methods not defined here are never called
	mu       sync.Mutex
	out      []byte
}

func (c *captureConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.out = append(c.out, p...)
	return len(p), nil
}

func (c *captureConn) Read([]byte) (int, error)         { return 0, errors.New("capture: no server") }
func (c *captureConn) Close() error                     { return nil }
func (c *captureConn) SetDeadline(time.Time) error      { return nil }
func (c *captureConn) SetReadDeadline(time.Time) error  { return nil }
func (c *captureConn) SetWriteDeadline(time.Time) error { return nil }
func (c *captureConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *captureConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }

// clientHello returns the first flight of a crypto/tls client with cfg.
func clientHello(t testing.TB, cfg *tls.Config) []byte {
	t.Helper()
	c := &captureConn{}
	tls.Client(c, cfg).Handshake() // fails reading the ServerHello
	if len(c.out) == 0 {
		t.Fatal("crypto/tls wrote no ClientHello")
	}
	return c.out
}

// echConfigList returns an ECHConfigList (draft-ietf-tls-esni-22 section 4)
// with one X25519/HKDF-SHA256/AES-128-GCM config for publicName, enough
// for a crypto/tls client to send an encrypted ClientHello.
func echConfigList(t testing.TB, publicName string) []byte {
	t.Helper()
	key, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var b cryptobyte.Builder
	b.AddUint16LengthPrefixed(func(list *cryptobyte.Builder) {
		list.AddUint16(extEncryptedHello) // version
		list.AddUint16LengthPrefixed(func(c *cryptobyte.Builder) {
			c.AddUint8(7)     // config_id
			c.AddUint16(0x20) // DHKEM(X25519, HKDF-SHA256)
			c.AddUint16LengthPrefixed(func(k *cryptobyte.Builder) { k.AddBytes(key.PublicKey().Bytes()) })
			c.AddUint16LengthPrefixed(func(s *cryptobyte.Builder) {
				s.AddUint16(1) // HKDF-SHA256
				s.AddUint16(1) // AES-128-GCM
			})
			c.AddUint8(0) // maximum_name_length
			c.AddUint8LengthPrefixed(func(n *cryptobyte.Builder) { n.AddBytes([]byte(publicName)) })
			c.AddUint16(0) // extensions
		})
	})
	return b.BytesOrPanic()
}

// ext is one extension of a hand-built ClientHello.
type ext struct {
	typ  uint16
	data []byte
}

// sni returns a server_name extension with the given host names.
func sni(names ...string) ext {
	var b cryptobyte.Builder
	b.AddUint16LengthPrefixed(func(l *cryptobyte.Builder) {
		for _, n := range names {
			l.AddUint8(nameTypeHostName)
			l.AddUint16LengthPrefixed(func(h *cryptobyte.Builder) { h.AddBytes([]byte(n)) })
		}
	})
	return ext{extServerName, b.BytesOrPanic()}
}

// helloMsg returns a minimal ClientHello handshake message with exts.
func helloMsg(exts ...ext) []byte {
	var b cryptobyte.Builder
	b.AddUint8(handshakeClientHello)
	b.AddUint24LengthPrefixed(func(h *cryptobyte.Builder) {
		h.AddUint16(0x0303)
		h.AddBytes(make([]byte, 32))
		h.AddUint8(0)                                                                  // session id
		h.AddUint16LengthPrefixed(func(s *cryptobyte.Builder) { s.AddUint16(0x1301) }) // cipher suites
		h.AddUint8LengthPrefixed(func(c *cryptobyte.Builder) { c.AddUint8(0) })        // compression
		h.AddUint16LengthPrefixed(func(e *cryptobyte.Builder) {
			for _, x := range exts {
				e.AddUint16(x.typ)
				e.AddUint16LengthPrefixed(func(d *cryptobyte.Builder) { d.AddBytes(x.data) })
			}
		})
	})
	return b.BytesOrPanic()
}

// records wraps a handshake message into TLS records of at most size bytes.
func records(msg []byte, size int) []byte {
	var out []byte
	for len(msg) > 0 {
		n := min(size, len(msg))
		out = append(out, recordTypeHandshake, 3, 1, byte(n>>8), byte(n))
		out = append(out, msg[:n]...)
		msg = msg[n:]
	}
	return out
}

// loopback returns the two ends of a TCP connection on 127.0.0.1.
func loopback(t testing.TB) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := ln.Accept()
		ch <- res{c, err}
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { client.Close(); r.c.Close() })
	return client, r.c
}

// splitConn writes each Write in pieces of at most size bytes, each in its
// own write call with a pause, so that they reach the peer as separate
// segments.
type splitConn struct {
	net.Conn
	size int
}

func (c *splitConn) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		k := min(c.size, len(p))
		m, err := c.Conn.Write(p[:k])
		n += m
		if err != nil {
			return n, err
		}
		p = p[k:]
		time.Sleep(time.Millisecond)
	}
	return n, nil
}
