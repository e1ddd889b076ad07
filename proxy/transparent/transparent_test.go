package transparent

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice/filter"
	"github.com/sluiceproxy/sluice/proxy/accesslog"
	"github.com/sluiceproxy/sluice/rules"
)

// origin is a loopback TCP server that counts its accepts and answers
// each connection's first line with "origin\n" after echoing what it read.
type origin struct {
	ln      net.Listener
	accepts atomic.Int64
}

func newOrigin(t *testing.T) *origin {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o := &origin{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			o.accepts.Add(1)
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				br := bufio.NewReader(c)
				line, _ := br.ReadString('\n')
				io.WriteString(c, "origin got "+line)
			}()
		}
	}()
	return o
}

func (o *origin) addr() netip.AddrPort { return netip.MustParseAddrPort(o.ln.Addr().String()) }

func engine(t *testing.T, src string) *filter.Engine {
	t.Helper()
	cfg, err := rules.Parse("sluice.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	set, err := rules.LoadSet(cfg)
	if err != nil {
		t.Fatal(err)
	}
	eng, err := filter.Compile(set)
	if err != nil {
		t.Fatal(err)
	}
	return eng
}

// serve runs ServeConn on one side of a loopback TCP pair whose
// destination is orig, and returns the client side and the access record.
func serve(t *testing.T, s *Server, orig netip.AddrPort) (net.Conn, <-chan *accesslog.Record) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	recs := make(chan *accesslog.Record, 1)
	s.Access = func(r *accesslog.Record) { recs <- r }
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	// Accept before the deferred Close: a listener closed with the
	// connection still in its queue resets it.
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	go s.ServeConn(context.Background(), sc, orig)
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c, recs
}

func record(t *testing.T, recs <-chan *accesslog.Record) *accesslog.Record {
	t.Helper()
	select {
	case r := <-recs:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no access record")
	}
	return nil
}

const testRules = `default: block
hosts:
  allowed.test: [127.0.0.1]
  blocked.test: [127.0.0.1]
  elsewhere.test: [127.0.0.2]
rules:
  - allow: [allowed.test, elsewhere.test]
  - block: [blocked.test]
`

func TestHTTPAllowedForwardsUnchanged(t *testing.T) {
	o := newOrigin(t)
	s := &Server{Policy: engine(t, testRules), VerifyHost: true, Lookup: (&lookup{}).resolve}
	c, recs := serve(t, s, o.addr())
	req := "GET /x HTTP/1.1\r\nHost: allowed.test\r\n\r\n"
	io.WriteString(c, req)
	got, _ := io.ReadAll(c)
	c.Close() // the origin half-closed; now the client does
	if string(got) != "origin got GET /x HTTP/1.1\r\n" {
		t.Errorf("client read %q", got)
	}
	r := record(t, recs)
	if r.Proto != "transparent" || r.Verdict != "allow" || r.Target != o.addr().String() {
		t.Errorf("record %+v", r)
	}
}

func TestHTTPBlockedGetsBlockPage(t *testing.T) {
	o := newOrigin(t)
	s := &Server{Policy: engine(t, testRules), VerifyHost: true, Lookup: (&lookup{}).resolve}
	c, recs := serve(t, s, o.addr())
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: blocked.test\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 403 || !strings.Contains(string(body), "blocked.test") {
		t.Errorf("status %d body %q", resp.StatusCode, body)
	}
	r := record(t, recs)
	if r.Verdict != "block" || r.Status != 403 {
		t.Errorf("record %+v", r)
	}
	if n := o.accepts.Load(); n != 0 {
		t.Errorf("origin accepted %d connections of a blocked request", n)
	}
}

// TestTLSBlockedClosed sends a real ClientHello naming a blocked host:
// the connection is closed, and the origin is never connected to.
func TestTLSBlockedClosed(t *testing.T) {
	o := newOrigin(t)
	s := &Server{Policy: engine(t, testRules), VerifyHost: true, Lookup: (&lookup{}).resolve}
	c, recs := serve(t, s, o.addr())
	err := tls.Client(c, &tls.Config{ServerName: "blocked.test"}).Handshake()
	if err == nil {
		t.Fatal("handshake succeeded")
	}
	r := record(t, recs)
	if r.Verdict != "block" || r.Reason != "sniffed" {
		t.Errorf("record %+v", r)
	}
	if n := o.accepts.Load(); n != 0 {
		t.Errorf("origin accepted %d connections of a blocked ClientHello", n)
	}
}

// TestVerifyHost sends an allowed name to an address it does not resolve
// to: refused with "host mismatch"; without verify_host it passes.
func TestVerifyHost(t *testing.T) {
	for _, verify := range []bool{true, false} {
		o := newOrigin(t)
		s := &Server{Policy: engine(t, testRules), VerifyHost: verify, Lookup: (&lookup{}).resolve}
		c, recs := serve(t, s, o.addr())
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: elsewhere.test\r\n\r\n")
		got, _ := io.ReadAll(c)
		c.Close()
		r := record(t, recs)
		if verify {
			if r.Verdict != "block" || r.Reason != ReasonHostMismatch || o.accepts.Load() != 0 || !strings.HasPrefix(string(got), "HTTP/1.1 403") {
				t.Errorf("verify_host: record %+v, accepts %d, read %.40q", r, o.accepts.Load(), got)
			}
		} else if r.Verdict != "allow" || o.accepts.Load() != 1 {
			t.Errorf("no verify_host: record %+v, accepts %d", r, o.accepts.Load())
		}
	}
}

// TestUnnamed sends bytes without a name: blocked by default; under
// unnamed: allow, the address's IP rule decides.
func TestUnnamed(t *testing.T) {
	for _, tc := range []struct {
		unnamed rules.Action
		rules   string
		verdict string
		reason  string
	}{
		{"", "default: allow\n", "block", ReasonUnnamed},
		{rules.Allow, "default: allow\n", "allow", ""},
		{rules.Allow, "default: allow\nrules:\n  - block: [127.0.0.0/8]\n", "block", "blocked by rule"},
	} {
		o := newOrigin(t)
		s := &Server{Policy: engine(t, tc.rules), VerifyHost: true, Unnamed: tc.unnamed}
		c, recs := serve(t, s, o.addr())
		io.WriteString(c, "\x00\x01 not a protocol Sluice knows\n")
		io.ReadAll(c)
		c.Close()
		r := record(t, recs)
		if r.Verdict != tc.verdict || tc.reason != "" && r.Reason != tc.reason {
			t.Errorf("unnamed %q, %q: record %+v", tc.unnamed, tc.rules, r)
		}
	}
}

// TestAddressAsHost sends the original destination's address as Host: it
// is decided by the IP rules, not let through by the sniff step.
func TestAddressAsHost(t *testing.T) {
	o := newOrigin(t)
	s := &Server{Policy: engine(t, "default: allow\nrules:\n  - block: [127.0.0.0/8]\n"), VerifyHost: true}
	c, recs := serve(t, s, o.addr())
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
	io.ReadAll(c)
	if r := record(t, recs); r.Verdict != "block" || o.accepts.Load() != 0 {
		t.Errorf("record %+v, accepts %d", r, o.accepts.Load())
	}
}

// TestGuardRefuses: the guard's refusal (the loop check) stops the dial.
func TestGuardRefuses(t *testing.T) {
	o := newOrigin(t)
	s := &Server{Policy: engine(t, testRules), Lookup: (&lookup{}).resolve,
		Guard: func(*filter.Request, *filter.Decision, netip.AddrPort) (*filter.Decision, error) {
			return &filter.Decision{Verdict: filter.Block, Reason: "loop"}, io.EOF
		}}
	c, recs := serve(t, s, o.addr())
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n")
	io.ReadAll(c)
	if r := record(t, recs); r.Verdict != "block" || r.Reason != "loop" || o.accepts.Load() != 0 {
		t.Errorf("record %+v, accepts %d", r, o.accepts.Load())
	}
}

// lookup resolves the test names as the rules' hosts: do.
type lookup struct{}

func (*lookup) resolve(_ context.Context, host string) ([]netip.Addr, error) {
	switch host {
	case "allowed.test", "blocked.test":
		return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
	case "elsewhere.test":
		return []netip.Addr{netip.MustParseAddr("127.0.0.2")}, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

// TestOwnRefusedFirst: a connection to Sluice's own listener is refused
// as a loop before its name is decided or verified.
func TestOwnRefusedFirst(t *testing.T) {
	o := newOrigin(t)
	s := &Server{Policy: engine(t, testRules), VerifyHost: true, Lookup: (&lookup{}).resolve,
		Own: func(ap netip.AddrPort) bool { return ap == o.addr() }}
	c, recs := serve(t, s, o.addr())
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n")
	got, _ := io.ReadAll(c)
	if r := record(t, recs); r.Verdict != "block" || r.Reason != ReasonLoop || o.accepts.Load() != 0 || !strings.HasPrefix(string(got), "HTTP/1.1 403") {
		t.Errorf("record %+v, accepts %d, read %.40q", r, o.accepts.Load(), got)
	}
}

// TestRoute: an allowed connection is dialed to the original destination
// address, never the name, on the deciding rule's route.
func TestRoute(t *testing.T) {
	o := newOrigin(t)
	var route, addr string
	s := &Server{Policy: engine(t, "default: allow\nupstreams:\n  up: socks5://127.0.0.1:1\nrules:\n  - allow: [allowed.test]\n    via: up\n"),
		VerifyHost: true, Lookup: (&lookup{}).resolve,
		Dial: func(ctx context.Context, r, network, a string) (net.Conn, error) {
			route, addr = r, a
			var d net.Dialer
			return d.DialContext(ctx, network, a)
		}}
	c, recs := serve(t, s, o.addr())
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n")
	io.ReadAll(c)
	c.Close()
	if r := record(t, recs); r.Verdict != "allow" || r.Route != "up" || route != "up" || addr != o.addr().String() {
		t.Errorf("record %+v; dialed %q on route %q", r, addr, route)
	}
}
