package test

// Fixtures for the upstream tests (the real squid, danted and microsocks,
// and the origin that speaks first, come from dialtest, started per test):
// an origin that echoes the headers it received, and raw clients of
// Sluice's front ends.

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// Credentials of the authenticating upstreams. They are distinctive so that
// a search of Sluice's log for them cannot match anything else.
const (
	upUser    = "alice"
	upPass    = "Pw-7q2ZxK9"
	upBadPass = "Wrong-4hT8mV"
)

// echoOrigin is a plain HTTP origin on loopback that answers with the
// request line and every header it received, one "hdr Name: value" line
// each, and counts its requests.
type echoOrigin struct {
	*httptest.Server
	port string
	hits atomic.Int64
}

func newEchoOrigin(t *testing.T) *echoOrigin {
	t.Helper()
	o := &echoOrigin{}
	o.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.hits.Add(1)
		var b strings.Builder
		fmt.Fprintf(&b, "hello from echo host=%s path=%s\n", r.Host, r.URL.Path)
		names := slices.Sorted(func(yield func(string) bool) {
			for k := range r.Header {
				if !yield(k) {
					return
				}
			}
		})
		for _, k := range names {
			for _, v := range r.Header[k] {
				fmt.Fprintf(&b, "hdr %s: %s\n", k, v)
			}
		}
		io.WriteString(w, b.String())
	}))
	t.Cleanup(o.Close)
	_, o.port, _ = net.SplitHostPort(o.Listener.Addr().String())
	return o
}

// echoHeader returns the values of the header named name in an echo body,
// joined by ", ", or "" when the origin did not receive it.
func echoHeader(body, name string) string {
	var vals []string
	prefix := "hdr " + http.CanonicalHeaderKey(name) + ": "
	for line := range strings.SplitSeq(body, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimRight(line, "\r"), prefix); ok {
			vals = append(vals, v)
		}
	}
	return strings.Join(vals, ", ")
}

// rawConnect sends a CONNECT for target to the HTTP front end at proxy and
// reads the response header. With a 200 the tunnel's bytes follow in the
// returned reader; otherwise the response body is there to read.
func rawConnect(t *testing.T, proxy, target string) (*net.TCPConn, *bufio.Reader, *http.Response) {
	t.Helper()
	c, err := net.DialTimeout("tcp", proxy, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(15 * time.Second))
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		t.Fatalf("CONNECT %s: reading the response: %v", target, err)
	}
	return c.(*net.TCPConn), br, resp
}

// httpConnect opens a tunnel to target through the HTTP front end at proxy
// and fails the test unless the answer is 200.
func httpConnect(t *testing.T, proxy, target string) (*net.TCPConn, *bufio.Reader) {
	t.Helper()
	c, br, resp := rawConnect(t, proxy, target)
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		t.Fatalf("CONNECT %s: %s\n%s", target, resp.Status, body)
	}
	return c, br
}

// socks5Connect opens a tunnel to host:port through the SOCKS5 front end at
// proxy, sending the name (no authentication). It returns the connection
// and its reader; it fails the test unless the reply is 0x00.
func socks5Connect(t *testing.T, proxy, host string, port int) (*net.TCPConn, *bufio.Reader) {
	t.Helper()
	c, err := net.DialTimeout("tcp", proxy, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(15 * time.Second))
	br := bufio.NewReader(c)
	if _, err := c.Write([]byte{5, 1, 0}); err != nil {
		t.Fatal(err)
	}
	var sel [2]byte
	if _, err := io.ReadFull(br, sel[:]); err != nil || sel != [2]byte{5, 0} {
		t.Fatalf("SOCKS5 greeting: %v %x", err, sel)
	}
	req := []byte{5, 1, 0, 3, byte(len(host))}
	req = append(req, host...)
	req = binary.BigEndian.AppendUint16(req, uint16(port))
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
	var head [4]byte
	if _, err := io.ReadFull(br, head[:]); err != nil {
		t.Fatalf("SOCKS5 reply to %s:%d: %v", host, port, err)
	}
	if head[1] != 0 {
		t.Fatalf("SOCKS5 reply to %s:%d: code 0x%02x", host, port, head[1])
	}
	var skip int
	switch head[3] {
	case 1:
		skip = 4 + 2
	case 4:
		skip = 16 + 2
	case 3:
		l, err := br.ReadByte()
		if err != nil {
			t.Fatal(err)
		}
		skip = int(l) + 2
	default:
		t.Fatalf("SOCKS5 reply: address type %d", head[3])
	}
	if _, err := io.ReadFull(br, make([]byte, skip)); err != nil {
		t.Fatal(err)
	}
	return c.(*net.TCPConn), br
}

// talkBanner reads the banner before sending anything, then sends a line,
// half-closes and expects the origin's count. It returns a description of
// the first thing that went wrong, or "".
func talkBanner(c *net.TCPConn, br *bufio.Reader, banner string, halfClose bool) string {
	got := make([]byte, len(banner))
	if _, err := io.ReadFull(br, got); err != nil || string(got) != banner {
		return fmt.Sprintf("banner: got %q, %v; want %q", got, err, banner)
	}
	if _, err := io.WriteString(c, "ping\n"); err != nil {
		return "write: " + err.Error()
	}
	if line, err := br.ReadString('\n'); err != nil || line != "ack 5\n" {
		return fmt.Sprintf("after a line: got %q, %v; want \"ack 5\\n\"", line, err)
	}
	if !halfClose {
		return ""
	}
	if err := c.CloseWrite(); err != nil {
		return "CloseWrite: " + err.Error()
	}
	if line, err := br.ReadString('\n'); err != nil || line != "got 5\n" {
		return fmt.Sprintf("after half-close: got %q, %v; want \"got 5\\n\"", line, err)
	}
	return ""
}

// atoi is strconv.Atoi for values known to be numbers.
func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}
