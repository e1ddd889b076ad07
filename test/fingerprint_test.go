package test

// Nothing that fingerprints the proxy (issue 16): what a raw origin
// receives through Sluice with anonymize must be what it receives from the
// client directly, header by header and body byte for byte, less the
// hop-by-hop headers.

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fpOrigin is a loopback HTTP origin that keeps each request exactly as
// it arrived (request line, header lines in order and case, body bytes)
// and answers 200 with a fixed body, then closes.
type fpOrigin struct {
	ln   net.Listener
	mu   sync.Mutex
	reqs [][]byte
}

func newFPOrigin(t *testing.T) *fpOrigin {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o := &fpOrigin{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go o.serve(c)
		}
	}()
	return o
}

func (o *fpOrigin) serve(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(c)
	var raw bytes.Buffer
	tp := textproto.NewReader(br)
	n := 0
	chunked := false
	for {
		line, err := tp.ReadLine()
		if err != nil {
			return
		}
		raw.WriteString(line + "\r\n")
		if line == "" {
			break
		}
		if k, v, ok := strings.Cut(line, ":"); ok {
			switch strings.ToLower(strings.TrimSpace(k)) {
			case "content-length":
				n, _ = strconv.Atoi(strings.TrimSpace(v))
			case "transfer-encoding":
				chunked = strings.Contains(strings.ToLower(v), "chunked")
			}
		}
	}
	if chunked {
		body, _ := io.ReadAll(io.LimitReader(httputil.NewChunkedReader(br), 1<<20))
		raw.Write(body)
	} else if n > 0 {
		body := make([]byte, n)
		io.ReadFull(br, body)
		raw.Write(body)
	}
	o.mu.Lock()
	o.reqs = append(o.reqs, raw.Bytes())
	o.mu.Unlock()
	io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n")
}

func (o *fpOrigin) last(t *testing.T) []byte {
	t.Helper()
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.reqs) == 0 {
		t.Fatal("the origin got no request")
	}
	return o.reqs[len(o.reqs)-1]
}

// sendRaw writes req on a new connection to addr and reads the answer.
func fpSend(t *testing.T, addr, req string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	io.WriteString(c, req)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("%s: no answer: %v", addr, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.Status + "\n" + string(b)
}

// parsedReq is a request as the origin got it: header lines in order, and
// the body.
type parsedReq struct {
	line   string
	fields [][2]string // name as sent, value
	body   []byte
}

func fpParse(t *testing.T, raw []byte) parsedReq {
	t.Helper()
	head, body, ok := bytes.Cut(raw, []byte("\r\n\r\n"))
	if !ok {
		t.Fatalf("no end of header in %q", raw)
	}
	lines := strings.Split(string(head), "\r\n")
	p := parsedReq{line: lines[0], body: body}
	for _, l := range lines[1:] {
		k, v, _ := strings.Cut(l, ":")
		p.fields = append(p.fields, [2]string{k, strings.TrimSpace(v)})
	}
	return p
}

// values maps each lowercased name to its values in order.
func (p parsedReq) values() map[string][]string {
	m := map[string][]string{}
	for _, f := range p.fields {
		k := strings.ToLower(f[0])
		m[k] = append(m[k], f[1])
	}
	return m
}

// hopByHop are headers a proxy must not forward (RFC 9110 7.6.1): the
// client's may be missing at the origin, and Sluice must add none.
var hopByHop = []string{"connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade", "proxy-authorization"}

// TestNoFingerprint sends each request to a raw origin directly and
// through Sluice (anonymize on), and compares what the origin got: the
// method and target, every end-to-end header (names compared without
// case, values and their order per name exactly) and the body, byte for
// byte. What Go's HTTP stack still changes is listed in the README
// ("What an origin sees"); the last cases pin it down.
func TestNoFingerprint(t *testing.T) {
	t.Parallel()
	o := newFPOrigin(t)
	p := startSluice(t, "default: allow\nanonymize: true\n", nil)
	host := o.ln.Addr().String()
	cases := []struct{ name, req string }{
		{"GET", "GET /a?b=1&c=%2F HTTP/1.1\r\nHost: HOST\r\nUser-Agent: probe/1 (x; y)\r\nAccept: */*\r\nAccept-Language: en;q=0.5\r\n\r\n"},
		{"GET without User-Agent or Accept-Encoding", "GET / HTTP/1.1\r\nHost: HOST\r\n\r\n"},
		{"POST with a body", "POST /form HTTP/1.1\r\nHost: HOST\r\nContent-Type: application/octet-stream\r\nContent-Length: 9\r\n\r\n\x00ab\r\ncd\xff\n\r"},
		{"POST chunked", "POST /c HTTP/1.1\r\nHost: HOST\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"},
		{"POST empty", "POST /z HTTP/1.1\r\nHost: HOST\r\nContent-Length: 0\r\n\r\n"},
		{"duplicate headers", "GET /d HTTP/1.1\r\nHost: HOST\r\nX-Dup: one\r\nx-dup: two\r\nCookie: a=1\r\nCookie: b=2\r\nAccept: a/b\r\nAccept: c/d\r\n\r\n"},
		{"client sent hop-by-hop headers", "GET / HTTP/1.1\r\nHost: HOST\r\nAccept-Encoding: identity\r\nConnection: keep-alive\r\nKeep-Alive: 5\r\n\r\n"},
		{"HTTP/1.0 client", "GET /ten HTTP/1.0\r\nHost: HOST\r\nUser-Agent: old\r\n\r\n"},
		{"Expect", "PUT /e HTTP/1.1\r\nHost: HOST\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi"},
	}
	for _, c := range cases {
		direct := strings.ReplaceAll(c.req, "HOST", host)
		fpSend(t, host, direct)
		d := fpParse(t, o.last(t))
		via := strings.Replace(direct, " /", " http://"+host+"/", 1)
		fpSend(t, p.addr, via)
		v := fpParse(t, o.last(t))
		dm, _, _ := strings.Cut(d.line, " HTTP/")
		vm, _, _ := strings.Cut(v.line, " HTTP/")
		if dm != vm {
			t.Errorf("%s: request line %q through Sluice, %q direct", c.name, v.line, d.line)
		}
		dv, vv := d.values(), v.values()
		for _, h := range hopByHop {
			// The client's are removed, and Sluice adds none.
			delete(dv, h)
			if got, ok := vv[h]; ok {
				t.Errorf("%s: the origin got %s: %q through Sluice", c.name, h, got)
				delete(vv, h)
			}
		}
		for k, want := range dv {
			if got := vv[k]; !slices.Equal(got, want) {
				t.Errorf("%s: %s: %q through Sluice, %q direct", c.name, k, got, want)
			}
		}
		for k, got := range vv {
			if _, ok := dv[k]; !ok {
				t.Errorf("%s: Sluice added %s: %q", c.name, k, got)
			}
		}
		if !bytes.Equal(d.body, v.body) {
			t.Errorf("%s: body %q through Sluice, %q direct", c.name, v.body, d.body)
		}
	}
}

// TestFingerprintGoChanges pins down what Go's stack still changes, as the
// README says: header order (Host, User-Agent, then the rest sorted by
// name), name case (canonical), HTTP/1.1 for an HTTP/1.0 request, an empty
// User-Agent and a GET's Content-Length: 0 dropped, and the HTTP/1.0
// client's connection still closed after the answer.
func TestFingerprintGoChanges(t *testing.T) {
	t.Parallel()
	o := newFPOrigin(t)
	p := startSluice(t, "default: allow\nanonymize: true\n", nil)
	host := o.ln.Addr().String()
	fpSend(t, p.addr, "GET http://"+host+"/ HTTP/1.1\r\nHost: "+host+"\r\nx-b: 1\r\nUser-Agent: ua\r\nX-A: 2\r\n\r\n")
	v := fpParse(t, o.last(t))
	var names []string
	for _, f := range v.fields {
		names = append(names, f[0])
	}
	if want := []string{"Host", "User-Agent", "X-A", "X-B"}; !slices.Equal(names, want) {
		t.Errorf("header order through Sluice %q, README says %q", names, want)
	}
	fpSend(t, p.addr, "GET http://"+host+"/ HTTP/1.1\r\nHost: "+host+"\r\nUser-Agent:\r\nContent-Length: 0\r\n\r\n")
	if vv := fpParse(t, o.last(t)).values(); vv["user-agent"] != nil || vv["content-length"] != nil {
		t.Errorf("an empty User-Agent or a GET's Content-Length: 0 reached the origin: %q", vv)
	}
	// The HTTP/1.0 client's connection closes after the answer although
	// the origin saw no "Connection: close".
	c, err := net.DialTimeout("tcp", p.addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	io.WriteString(c, "GET http://"+host+"/ten HTTP/1.0\r\nHost: "+host+"\r\n\r\n")
	if b, err := io.ReadAll(c); err != nil || !strings.HasSuffix(string(b), "ok\n") {
		t.Errorf("HTTP/1.0 client: %q, %v (want the answer, then EOF)", b, err)
	}
	if vv := fpParse(t, o.last(t)); !strings.HasSuffix(vv.line, "HTTP/1.1") || vv.values()["connection"] != nil {
		t.Errorf("HTTP/1.0 through Sluice reached the origin as %q %q", vv.line, vv.fields)
	}
}
