package dial

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
)

// Limits on an upstream's CONNECT response.
const (
	maxConnectLine    = 4096 // bytes in one status or header line
	maxConnectHeaders = 100  // header lines
)

// errConnectResponse means an upstream's answer to CONNECT is not HTTP.
var errConnectResponse = errors.New("dial: malformed CONNECT response")

// httpConnect is the handshake of an http or https upstream: CONNECT.
type httpConnect struct {
	tls  *tls.Config // nil for http
	auth string      // "Basic ..." or ""
	iso  isolator    // per-dial credentials instead of auth, or nil
}

func basicAuth(u *url.Userinfo) string {
	p, _ := u.Password()
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(u.Username()+":"+p))
}

func (hc *httpConnect) handshake(ctx context.Context, c net.Conn, _, addr string) (net.Conn, error) {
	if hc.tls != nil {
		tc := tls.Client(c, hc.tls)
		if err := tc.HandshakeContext(ctx); err != nil {
			kind := KindUpstream
			if classifyRaw(err) == KindTimeout {
				kind = KindTimeout
			}
			return nil, &hopError{kind: kind, fault: true, err: fmt.Errorf("tls handshake: %w", err)}
		}
		c = tc
	}
	var req bytes.Buffer
	req.WriteString("CONNECT " + addr + " HTTP/1.1\r\nHost: " + addr + "\r\n")
	auth := hc.auth
	if hc.iso != nil {
		auth = basicAuth(hc.iso(ctx, addr))
	}
	if auth != "" {
		req.WriteString("Proxy-Authorization: " + auth + "\r\n")
	}
	req.WriteString("\r\n")
	if _, err := c.Write(req.Bytes()); err != nil {
		return nil, fmt.Errorf("sending CONNECT: %w", err)
	}
	br := bufio.NewReaderSize(c, maxConnectLine)
	code, status, err := readConnectResponse(br)
	if err != nil {
		if errors.Is(err, errConnectResponse) {
			return nil, &hopError{kind: KindUpstream, fault: true, err: err}
		}
		return nil, fmt.Errorf("reading CONNECT response: %w", err)
	}
	switch {
	case code >= 200 && code < 300:
	case code == 407:
		return nil, &hopError{kind: KindUpstreamAuth, fault: true, err: fmt.Errorf("upstream answered %s", status)}
	case code == 403:
		// The parent's own filtering refused the target; the hop works.
		return nil, &hopError{kind: KindUpstreamRefused, err: fmt.Errorf("upstream answered %s", status)}
	default:
		return nil, &hopError{kind: KindUpstream, err: fmt.Errorf("upstream answered %s", status)}
	}
	if n := br.Buffered(); n > 0 {
		// The target spoke right behind the 200: keep its first bytes.
		b, _ := br.Peek(n)
		return &replayConn{Conn: c, buf: bytes.Clone(b)}, nil
	}
	return c, nil
}

// readConnectResponse reads an HTTP/1.x response head from br: the status
// line and the header lines up to the empty line, and not one byte more,
// so that whatever the target sends next stays in br. It returns the
// status code and the status text ("200 Connection established").
// A response to CONNECT has no body worth reading: a 2xx has none, and
// on failure the connection is closed.
func readConnectResponse(br *bufio.Reader) (code int, status string, err error) {
	line, err := readLine(br)
	if err != nil {
		return 0, "", err
	}
	// "HTTP/1.1 200 Connection established"
	proto, rest, ok := bytes.Cut(line, []byte(" "))
	if !ok || len(proto) != 8 || !bytes.HasPrefix(proto, []byte("HTTP/1.")) || proto[7] < '0' || proto[7] > '9' {
		return 0, "", fmt.Errorf("%w: status line %q", errConnectResponse, truncate(line))
	}
	if len(rest) < 3 || (len(rest) > 3 && rest[3] != ' ') {
		return 0, "", fmt.Errorf("%w: status line %q", errConnectResponse, truncate(line))
	}
	code, err = strconv.Atoi(string(rest[:3]))
	if err != nil || code < 100 {
		return 0, "", fmt.Errorf("%w: status code %q", errConnectResponse, truncate(rest[:3]))
	}
	status = string(truncate(rest))
	for i := 0; ; i++ {
		if i == maxConnectHeaders {
			return 0, "", fmt.Errorf("%w: too many header lines", errConnectResponse)
		}
		line, err := readLine(br)
		if err != nil {
			return 0, "", err
		}
		if len(line) == 0 {
			return code, status, nil
		}
	}
}

// readLine reads one line ending in "\n" and strips "\r\n" or "\n".
func readLine(br *bufio.Reader) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		return nil, fmt.Errorf("%w: line longer than %d bytes", errConnectResponse, maxConnectLine)
	}
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

// truncate keeps error texts short.
func truncate(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}

// replayConn is a connection whose first bytes were already read into
// buf. Reads return buf first. It keeps half-close (CloseWrite,
// CloseRead) and lets io.Copy reach the underlying connection once buf
// is drained, so the kernel splice path still applies.
type replayConn struct {
	net.Conn
	buf []byte
}

func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.buf) > 0 {
		n := copy(p, c.buf)
		c.buf = c.buf[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// Unwrap returns the underlying connection and the bytes still to be
// replayed (it is a relay.Unwrapper), so that a tunnel through an HTTP
// upstream is spliced by the kernel.
func (c *replayConn) Unwrap() (net.Conn, []byte) { return c.Conn, c.buf }

// WriteTo writes the replayed bytes, then copies the rest of the
// connection to w.
func (c *replayConn) WriteTo(w io.Writer) (int64, error) {
	var n int64
	if len(c.buf) > 0 {
		m, err := w.Write(c.buf)
		n += int64(m)
		c.buf = c.buf[m:]
		if err != nil {
			return n, err
		}
	}
	m, err := io.Copy(w, c.Conn)
	return n + m, err
}

// ReadFrom copies r into the connection.
func (c *replayConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c.Conn}, r)
}

// CloseWrite shuts down the writing side, if the connection can.
func (c *replayConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return fmt.Errorf("dial: CloseWrite: %w", errors.ErrUnsupported)
}

// CloseRead shuts down the reading side, if the connection can.
func (c *replayConn) CloseRead() error {
	if cr, ok := c.Conn.(interface{ CloseRead() error }); ok {
		return cr.CloseRead()
	}
	return fmt.Errorf("dial: CloseRead: %w", errors.ErrUnsupported)
}
