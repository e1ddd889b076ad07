package sniffpolicy

import (
	"context"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice/filter"
	"github.com/sluiceproxy/sluice/proxy/sniff"
	"github.com/sluiceproxy/sluice/rules"
	"go.uber.org/goleak"
)

// TestMain fails the package when a test leaves a goroutine behind (Late
// starts two readers and must collect both).
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// policy blocks the names in block, allows the others by rule (or by
// default when dflt), and routes allowed names through "via-NAME".
type policy struct {
	block []string
	dflt  filter.Verdict // verdict for names not in block or allow
	allow []string
}

func (p policy) Decide(r filter.Request) filter.Decision {
	for i, b := range p.block {
		if r.Host == b {
			return filter.Decision{Verdict: filter.Block, Reason: filter.ReasonBlocked, Rule: filter.RuleRef{Index: i + 1}}
		}
	}
	for _, a := range p.allow {
		if r.Host == a {
			return filter.Decision{Verdict: filter.Allow, Reason: filter.ReasonAllowed, Rule: filter.RuleRef{Index: 9}, Via: "via-" + a}
		}
	}
	return filter.Decision{Verdict: p.dflt, Reason: filter.ReasonDefault, Default: true}
}

func TestWants(t *testing.T) {
	for _, tc := range []struct {
		mode rules.SniffMode
		host string
		want bool
	}{
		{rules.SniffIP, "192.0.2.1", true}, {rules.SniffIP, "2001:db8::1", true}, {rules.SniffIP, "a.test", false},
		{rules.SniffAll, "a.test", true}, {rules.SniffOff, "192.0.2.1", false}, {"", "192.0.2.1", false},
	} {
		if got := (Config{Mode: tc.mode}).Wants(tc.host); got != tc.want {
			t.Errorf("mode %q, host %q: %v", tc.mode, tc.host, got)
		}
	}
}

func TestDecide(t *testing.T) {
	first := filter.Decision{Verdict: filter.Allow, Reason: filter.ReasonDefault, Default: true, Via: "first"}
	p := policy{block: []string{"blocked.test"}, allow: []string{"allowed.test"}, dflt: filter.Allow}
	whitelist := policy{allow: []string{"allowed.test"}, dflt: filter.Block}
	tlsName := func(n string) sniff.Result { return sniff.Result{Proto: sniff.TLS, Name: n} }
	cases := []struct {
		name    string
		r       sniff.Result
		host    string // the tunnel's target
		unnamed rules.Action
		pol     Policy
		verdict filter.Verdict
		reason  string
		via     string
		sniffed string
	}{
		{"blocked SNI", tlsName("blocked.test"), "192.0.2.1", "", p, filter.Block, ReasonSniffed, "", "blocked.test"},
		{"blocked SNI, other spelling", tlsName("Blocked.TEST."), "192.0.2.1", "", p, filter.Block, ReasonSniffed, "", "blocked.test"},
		{"allowed SNI takes its route", tlsName("allowed.test"), "192.0.2.1", "", p, filter.Allow, filter.ReasonAllowed, "via-allowed.test", "allowed.test"},
		{"unlisted SNI, default allow", tlsName("other.test"), "192.0.2.1", "", p, filter.Allow, filter.ReasonDefault, "", "other.test"},
		{"unlisted SNI, default block", tlsName("other.test"), "192.0.2.1", "", whitelist, filter.Block, ReasonSniffed, "", "other.test"},
		{"fronting", tlsName("blocked.test"), "allowed.test", "", p, filter.Block, ReasonSniffed, "", "blocked.test"},
		{"same name", tlsName("allowed.test"), "allowed.test", "", p, filter.Allow, filter.ReasonDefault, "first", "allowed.test"},
		{"http host", sniff.Result{Proto: sniff.HTTP, Name: "blocked.test"}, "192.0.2.1", "", p, filter.Block, ReasonSniffed, "", "blocked.test"},
		{"nil policy", tlsName("a.test"), "192.0.2.1", "", nil, filter.Block, ReasonSniffed, "", "a.test"},
		{"ambiguous", sniff.Result{Proto: sniff.HTTP, Err: sniff.ErrAmbiguous}, "192.0.2.1", "", p, filter.Block, ReasonSniffed, "", ""},
		{"ech to IP, unnamed allow", sniff.Result{Proto: sniff.TLS, Name: "blocked.test", ECH: true}, "192.0.2.1", rules.Allow, p, filter.Allow, filter.ReasonDefault, "first", ""},
		{"ech to IP, unnamed block", sniff.Result{Proto: sniff.TLS, Name: "public.test", ECH: true}, "192.0.2.1", rules.Block, p, filter.Block, ReasonSniffed, "", ""},
		{"ech to a name, unnamed block", sniff.Result{Proto: sniff.TLS, Name: "public.test", ECH: true}, "allowed.test", rules.Block, p, filter.Allow, filter.ReasonDefault, "first", ""},
		{"no SNI to IP, unnamed block", sniff.Result{Proto: sniff.TLS, Err: sniff.ErrNoName}, "192.0.2.1", rules.Block, p, filter.Block, ReasonSniffed, "", ""},
		{"invalid SNI to IP, unnamed block", tlsName("a..b"), "192.0.2.1", rules.Block, p, filter.Block, ReasonSniffed, "", ""},
		{"truncated TLS to IP, unnamed default", sniff.Result{Proto: sniff.TLS, Err: sniff.ErrTruncated}, "192.0.2.1", "", p, filter.Allow, filter.ReasonDefault, "first", ""},
		{"http without host, unnamed block", sniff.Result{Proto: sniff.HTTP, Err: sniff.ErrNoName}, "192.0.2.1", rules.Block, p, filter.Allow, filter.ReasonDefault, "first", ""},
		{"nothing sent, unnamed block", sniff.Result{}, "192.0.2.1", rules.Block, p, filter.Allow, filter.ReasonDefault, "first", ""},
		{"other protocol, unnamed block", sniff.Result{Proto: sniff.Other}, "192.0.2.1", rules.Block, p, filter.Allow, filter.ReasonDefault, "first", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := filter.Request{Client: netip.MustParseAddr("127.0.0.1"), Host: tc.host, Port: 443}
			o := decide(tc.r, Config{Mode: rules.SniffAll, Unnamed: tc.unnamed}, tc.pol, req, first)
			d := o.Decision
			if d.Verdict != tc.verdict || d.Reason != tc.reason || d.Via != tc.via || o.Name != tc.sniffed {
				t.Fatalf("got %v %q via %q name %q; want %v %q via %q name %q", d.Verdict, d.Reason, d.Via, o.Name, tc.verdict, tc.reason, tc.via, tc.sniffed)
			}
		})
	}
}

// pair returns the two ends of a TCP connection on loopback.
func pair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ch := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		ch <- c
	}()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b := <-ch
	if b == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

func TestLate(t *testing.T) {
	first := Outcome{Decision: filter.Decision{Verdict: filter.Allow, Default: true}}
	req := filter.Request{Host: "192.0.2.1", Port: 443}
	pol := policy{block: []string{"blocked.test"}, dflt: filter.Allow}
	cfg := Config{Mode: rules.SniffIP}

	t.Run("client speaks late", func(t *testing.T) {
		client, clientSide := pair(t)
		_, originSide := pair(t)
		head := "GET / HTTP/1.1\r\nHost: blocked.test\r\n\r\n" + strings.Repeat("x", 3000) // more than one sniff read
		go func() {
			time.Sleep(50 * time.Millisecond)
			io.WriteString(client, head)
		}()
		o, fromOrigin := Late(context.Background(), clientSide, originSide, cfg, pol, req, first, 5*time.Second)
		if o.Decision.Verdict != filter.Block || o.Decision.Reason != ReasonSniffed || o.Name != "blocked.test" || len(fromOrigin) != 0 {
			t.Fatalf("got %+v, %q from the origin", o.Decision, fromOrigin)
		}
		if string(o.Result.Data) != head {
			t.Fatalf("data: %d bytes, want %d", len(o.Result.Data), len(head))
		}
	})
	t.Run("server speaks first", func(t *testing.T) {
		client, clientSide := pair(t)
		origin, originSide := pair(t)
		io.WriteString(origin, "220 hello\r\n")
		o, fromOrigin := Late(context.Background(), clientSide, originSide, cfg, pol, req, first, 5*time.Second)
		if o.Decision.Verdict != filter.Allow || string(fromOrigin) != "220 hello\r\n" || len(o.Result.Data) != 0 {
			t.Fatalf("got %+v, %q from the origin, %q from the client", o.Decision, fromOrigin, o.Result.Data)
		}
		// The conns are usable: no deadline is left behind.
		io.WriteString(client, "EHLO")
		b := make([]byte, 4)
		if _, err := io.ReadFull(clientSide, b); err != nil || string(b) != "EHLO" {
			t.Fatalf("client side after Late: %q %v", b, err)
		}
	})
	t.Run("nobody speaks", func(t *testing.T) {
		_, clientSide := pair(t)
		_, originSide := pair(t)
		o, fromOrigin := Late(context.Background(), clientSide, originSide, cfg, pol, req, first, 100*time.Millisecond)
		if o.Decision.Verdict != filter.Allow || len(fromOrigin) != 0 || len(o.Result.Data) != 0 {
			t.Fatalf("got %+v", o)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		_, clientSide := pair(t)
		_, originSide := pair(t)
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(50*time.Millisecond, cancel)
		o, _ := Late(ctx, clientSide, originSide, cfg, pol, req, first, time.Hour)
		if o.Decision.Verdict != filter.Allow || ctx.Err() == nil {
			t.Fatalf("got %+v", o)
		}
	})
}
