package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// The origins the loads reach, on 127.0.0.1: a minimal HTTP/1.1 server
// that answers every GET with the same 1 KiB body (kept cheap so that the
// proxy's share of the CPU shows), and a bulk server that sinks, sources
// or echoes bytes. The bulk protocol starts with one command byte that is
// neither TLS nor printable, so that a sniffing proxy (Sluice's sniff: ip)
// sees "other" at once:
//
//	0x01 N(8, big endian) then N bytes  -> reply N'(8) crc32c(4) of what arrived
//	0x02 N(8)                           -> N bytes of the stream, crc32c(4), close
//
// The echo origin of idle tunnels sends back what it receives; their first
// byte (0x03) is as little printable.
const (
	cmdUp   = 0x01
	cmdDown = 0x02
	cmdEcho = 0x03
)

// body is what the HTTP origin serves: 1 KiB of printable bytes.
var body = func() []byte {
	b := make([]byte, 1024)
	for i := range b {
		b[i] = 'a' + byte(i%26)
	}
	copy(b, "sluice-loadgen 1 KiB body\n")
	return b
}()

var (
	respKeep  = append([]byte("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 1024\r\n\r\n"), body...)
	respClose = append([]byte("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 1024\r\nConnection: close\r\n\r\n"), body...)
)

// origin is a listener with a goroutine per connection; close stops it
// and closes every connection it accepted.
type origin struct {
	ln      net.Listener
	addr    string
	accepts atomic.Int64 // connections accepted so far
	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	wg      sync.WaitGroup
}

func startOrigin(serve func(net.Conn)) (*origin, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	o := &origin{ln: ln, addr: ln.Addr().String(), conns: map[net.Conn]struct{}{}}
	o.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				time.Sleep(10 * time.Millisecond) // EMFILE and friends: try again
				continue
			}
			o.accepts.Add(1)
			o.mu.Lock()
			o.conns[c] = struct{}{}
			o.mu.Unlock()
			o.wg.Go(func() {
				serve(c)
				c.Close()
				o.mu.Lock()
				delete(o.conns, c)
				o.mu.Unlock()
			})
		}
	})
	return o, nil
}

// closeConns closes every connection the origin accepted, the origin
// first: TIME_WAIT then stays on the origin's port, not on an ephemeral
// port of the client or the proxy.
func (o *origin) closeConns() {
	o.mu.Lock()
	for c := range o.conns {
		c.Close()
	}
	o.mu.Unlock()
}

func (o *origin) close() {
	o.ln.Close()
	o.mu.Lock()
	for c := range o.conns {
		c.Close()
	}
	o.mu.Unlock()
	o.wg.Wait()
}

// serveHTTP answers GET requests on c with the 1 KiB body until the client
// closes or asks for Connection: close, which the origin then closes
// first (as HTTP servers do, so TIME_WAIT stays on the origin's side).
func serveHTTP(c net.Conn) {
	br := bufio.NewReaderSize(c, 4096)
	for {
		closing, err := readHead(br)
		if err != nil {
			return
		}
		if closing {
			c.Write(respClose)
			return
		}
		if _, err := c.Write(respKeep); err != nil {
			return
		}
	}
}

// readHead reads a request or response head up to its empty line and
// reports whether it says Connection: close.
func readHead(br *bufio.Reader) (closing bool, err error) {
	for n := 0; ; n++ {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return false, err
		}
		if len(line) <= 2 && n > 0 {
			return closing, nil
		}
		if n > 100 {
			return false, errors.New("head too long")
		}
		if hasPrefixFold(line, "connection:") && bytes.Contains(bytes.ToLower(line), []byte("close")) {
			closing = true
		}
	}
}

func hasPrefixFold(b []byte, prefix string) bool {
	return len(b) >= len(prefix) && bytes.EqualFold(b[:len(prefix)], []byte(prefix))
}

// chunkSize is the unit of the bulk stream.
const chunkSize = 256 << 10

// pattern is the content of every chunk of the bulk stream, except its
// first 8 bytes, which hold the chunk's number: a chunk lost, repeated or
// reordered changes the stream's checksum.
var pattern = func() []byte {
	r := rand.New(rand.NewPCG(13, 13))
	b := make([]byte, chunkSize)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}()

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// writeStream writes n bytes of the bulk stream to w and returns their
// crc32c.
func writeStream(w io.Writer, n int64) (uint32, error) {
	buf := make([]byte, chunkSize)
	copy(buf, pattern)
	var crc uint32
	for i := uint64(0); n > 0; i++ {
		k := min(n, chunkSize)
		binary.BigEndian.PutUint64(buf, i)
		crc = crc32.Update(crc, castagnoli, buf[:k])
		if _, err := w.Write(buf[:k]); err != nil {
			return crc, err
		}
		n -= k
	}
	return crc, nil
}

// readStream reads exactly n bytes from r and returns their crc32c.
func readStream(r io.Reader, n int64) (uint32, error) {
	buf := make([]byte, chunkSize)
	var crc uint32
	for n > 0 {
		k, err := r.Read(buf[:min(n, chunkSize)])
		crc = crc32.Update(crc, castagnoli, buf[:k])
		n -= int64(k)
		if err != nil && n > 0 {
			if err == io.EOF {
				err = fmt.Errorf("stream ended %d bytes short", n)
			}
			return crc, err
		}
	}
	return crc, nil
}

// serveBulk is the bulk origin's side of one connection. bulkTimeout
// bounds every transfer.
func serveBulk(c net.Conn, bulkTimeout time.Duration) {
	var hdr [9]byte
	c.SetDeadline(time.Now().Add(bulkTimeout))
	if _, err := io.ReadFull(c, hdr[:1]); err != nil {
		return
	}
	switch hdr[0] {
	case cmdUp:
		if _, err := io.ReadFull(c, hdr[1:]); err != nil {
			return
		}
		n := int64(binary.BigEndian.Uint64(hdr[1:]))
		crc, err := readStream(c, n)
		var reply [12]byte
		got := n
		if err != nil {
			got = -1
		}
		binary.BigEndian.PutUint64(reply[:], uint64(got))
		binary.BigEndian.PutUint32(reply[8:], crc)
		c.Write(reply[:])
	case cmdDown:
		if _, err := io.ReadFull(c, hdr[1:]); err != nil {
			return
		}
		n := int64(binary.BigEndian.Uint64(hdr[1:]))
		crc, err := writeStream(c, n)
		if err != nil {
			return
		}
		var trailer [4]byte
		binary.BigEndian.PutUint32(trailer[:], crc)
		c.Write(trailer[:])
	}
}

// serveEcho sends back what it receives: the origin of idle tunnels, which
// stay until the harness closes them. It reads into a buffer of its own:
// io.Copy between TCP connections would splice, through a pipe (two more
// fds) held for as long as the tunnel idles.
func serveEcho(c net.Conn) {
	buf := make([]byte, 512)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
