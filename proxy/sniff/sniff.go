// Package sniff reads the first bytes a client sends into a tunnel and finds
// the name they are addressed to: the server_name (SNI) of a TLS ClientHello,
// reassembled across TLS records and TCP segments, or the Host of a plain
// HTTP/1.x request. It reads a bounded number of bytes within a bounded time
// and returns them, so that the caller forwards them unchanged; it never
// writes to the conn. It uses the standard library and x/crypto/cryptobyte
// only, so that any front end (CONNECT, SOCKS, a transparent listener) can
// use it.
package sniff

import (
	"bytes"
	"errors"
	"net"
	"time"
)

// Bounds of one sniff. A ClientHello is about 250 bytes without a
// post-quantum key share and about 1.8 KiB with one (X25519MLKEM768); 16 KiB
// leaves room for large session tickets and PSK identities. A request head of
// plain HTTP is below 8 KiB on every common server (their own header limits).
const (
	// MaxHello bounds a ClientHello handshake message, its 4-byte header
	// included. A larger one is reported as TLS without a usable name.
	MaxHello = 16 << 10
	// MaxBytes bounds everything Read reads: MaxHello plus room for the
	// headers of the TLS records that carry it (a ClientHello split into
	// many small records) or for a request head of plain HTTP.
	MaxBytes = MaxHello + 4<<10
	// DefaultWait is how long Read waits for the client's first byte. A
	// client that speaks second (SMTP, FTP, POP3, IMAP, MySQL) sends nothing
	// until the server's greeting, so Read gives up quickly and reports
	// None. Browsers send their ClientHello at once after the proxy's reply.
	DefaultWait = time.Second
	// DefaultTimeout bounds a whole sniff, from its start to the last byte
	// of the ClientHello or request head.
	DefaultTimeout = 5 * time.Second
)

// Proto is what the first bytes turned out to be.
type Proto uint8

const (
	// None means the client sent nothing within the wait.
	None Proto = iota
	// Other means bytes that are neither a TLS handshake nor HTTP/1.x.
	Other
	// TLS means a TLS handshake record: a ClientHello, complete or not.
	TLS
	// HTTP means an HTTP/1.x request line.
	HTTP
)

// String returns "none", "other", "tls" or "http".
func (p Proto) String() string {
	switch p {
	case Other:
		return "other"
	case TLS:
		return "tls"
	case HTTP:
		return "http"
	}
	return "none"
}

// Errors in Result.Err: why a name could not be taken from the bytes.
var (
	// ErrTruncated means the client stopped (end of stream, timeout)
	// before the ClientHello or request head was complete.
	ErrTruncated = errors.New("sniff: truncated")
	// ErrTooLarge means the ClientHello or request head exceeds the bounds.
	ErrTooLarge = errors.New("sniff: too large")
	// ErrMalformed means a ClientHello or request head that does not parse.
	ErrMalformed = errors.New("sniff: malformed")
	// ErrNoName means a well-formed ClientHello without server_name, or an
	// HTTP request without Host.
	ErrNoName = errors.New("sniff: no name")
	// ErrAmbiguous means a ClientHello whose server_name holds several host
	// names, or an HTTP request head with several different Host headers
	// or a request target whose host differs from Host: servers disagree on
	// which one counts, so no single name can be trusted. Callers should
	// refuse such bytes rather than treat them as unnamed.
	ErrAmbiguous = errors.New("sniff: ambiguous host")
)

// Result is what Read found.
type Result struct {
	// Proto is what the bytes are.
	Proto Proto
	// Name is the SNI or the Host (without port, without brackets), exactly
	// as the client sent it; "" when none could be taken (see Err). The
	// caller normalizes and checks it.
	Name string
	// ECH is true when the ClientHello carries encrypted_client_hello
	// (extension 0xfe0d): Name is then the public name of the client-facing
	// server, not the name the client wants.
	ECH bool
	// Data holds every byte read, in order, to be forwarded unchanged.
	Data []byte
	// Err says why Name is empty, or is nil.
	Err error
}

// Options bounds a sniff. Zero fields take the defaults.
type Options struct {
	// Wait bounds the wait for the first byte. Zero means DefaultWait.
	Wait time.Duration
	// Timeout bounds the whole sniff. Zero means DefaultTimeout.
	Timeout time.Duration
}

// Read reads the client's first bytes from c, at most MaxBytes of them,
// until they name a host, prove they cannot, or the time runs out, and
// returns them with what they name. It sets c's read deadline while it
// reads and clears it before it returns. Read never fails: a read error,
// a timeout or a protocol it does not know are reported in the Result
// (Proto None or Other, or Err), and Data always holds the bytes read.
func Read(c net.Conn, o Options) Result {
	wait, timeout := o.Wait, o.Timeout
	if wait <= 0 {
		wait = DefaultWait
	}
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	start := time.Now()
	defer c.SetReadDeadline(time.Time{})
	c.SetReadDeadline(start.Add(min(wait, timeout)))
	buf := make([]byte, 0, 2048)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)] // grow
		}
		n, err := c.Read(buf[len(buf):min(cap(buf), MaxBytes)])
		buf = buf[:len(buf)+n]
		r, done := Parse(buf)
		if done {
			return r
		}
		if len(buf) >= MaxBytes {
			r.Err = ErrTooLarge
			return r
		}
		if err != nil {
			if len(buf) > 0 {
				r.Err = ErrTruncated
			}
			return r
		}
		if n > 0 && len(buf) == n {
			// The first bytes came and more are needed: the rest may
			// take until the timeout. (A first read that holds the
			// whole ClientHello, the usual case, moves no deadline.)
			c.SetReadDeadline(start.Add(timeout))
		}
	}
}

// Parse reports what buf, the first bytes of a client, names. done is false
// when more bytes could change the answer: a ClientHello or request head
// that is not complete yet. The Result's Data is buf.
func Parse(buf []byte) (r Result, done bool) {
	r.Data = buf
	switch {
	case len(buf) == 0:
		return r, false
	case buf[0] == recordTypeHandshake:
		r.Proto = TLS
		name, ech, err := parseRecords(buf)
		if errors.Is(err, errNeedMore) {
			return r, false
		}
		r.Name, r.ECH, r.Err = name, ech, err
		return r, true
	}
	switch isRequestLine(buf) {
	case yes:
		r.Proto = HTTP
		end := headEnd(buf)
		if end < 0 {
			return r, false
		}
		r.Name, r.Err = requestHost(buf[:end])
		return r, true
	case maybe:
		return r, false
	}
	r.Proto = Other
	return r, true
}

// headEnd returns the length of the request head in buf, up to and
// including the blank line that ends it, or -1.
func headEnd(buf []byte) int {
	end := -1
	if i := bytes.Index(buf, []byte("\r\n\r\n")); i >= 0 {
		end = i + 4
	}
	if i := bytes.Index(buf, []byte("\n\n")); i >= 0 && (end < 0 || i+2 < end) {
		end = i + 2
	}
	return end
}
