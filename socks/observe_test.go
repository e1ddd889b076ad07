package socks

import (
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice/filter"
	"github.com/sluiceproxy/sluice/proxy/dial"
	"github.com/sluiceproxy/sluice/proxy/observe"
	xproxy "golang.org/x/net/proxy"
)

// TestObserve: each SOCKS connection reaches the Observe hook once with
// its front end (SOCKS4 apart from SOCKS5), final verdict, category, host
// and bytes; a failed dial carries its error, an address the Guard refused
// is a block without one.
func TestObserve(t *testing.T) {
	echo := echoServer(t, "tcp", "127.0.0.1:0")
	_, echoPort, _ := net.SplitHostPort(echo)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, closedPort, _ := net.SplitHostPort(ln.Addr().String())
	ln.Close()
	lo := []netip.Addr{netip.MustParseAddr("127.0.0.1")}
	router, err := dial.NewRouter(dial.Config{Direct: &dial.Direct{Hosts: map[string][]netip.Addr{"ok.test": lo, "guarded.test": lo, "closed.test": lo}}})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	got := map[string]observe.Access{}
	s := &Server{
		Policy: policyFunc(func(r filter.Request) filter.Decision {
			if r.Host == "blocked.test" {
				return filter.Decision{Verdict: filter.Block, Reason: "matched rule", Category: "games"}
			}
			return filter.Decision{Verdict: filter.Allow, Reason: "no rule matched", Default: true}
		}),
		Dial: router.Dial,
		Guard: func(req *filter.Request, d *filter.Decision, addr netip.AddrPort) (*filter.Decision, error) {
			if req.Host == "guarded.test" {
				return &filter.Decision{Verdict: filter.Block, Reason: "private address", Category: "lan"}, dial.ErrBlocked
			}
			return nil, nil
		},
		Observe: func(a observe.Access) { mu.Lock(); got[a.Frontend+" "+a.Host] = a; mu.Unlock() },
	}
	addr := start(t, s)
	d, err := xproxy.SOCKS5("tcp", addr, nil, tcpForward{})
	if err != nil {
		t.Fatal(err)
	}
	c, err := d.Dial("tcp", "ok.test:"+echoPort)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "ping")
	c.(interface{ CloseWrite() error }).CloseWrite()
	if b, _ := io.ReadAll(c); string(b) != "ping" {
		t.Fatalf("echo: %q", b)
	}
	c.Close()
	for _, target := range []string{"blocked.test:" + echoPort, "closed.test:" + closedPort, "guarded.test:" + echoPort} {
		if c, err := d.Dial("tcp", target); err == nil {
			c.Close()
			t.Fatalf("%s: connected", target)
		}
	}
	// SOCKS4 to the echo server's IP.
	port, _ := strconv.Atoi(echoPort)
	c4 := dialRaw(t, addr)
	c4.Write([]byte{4, 1, byte(port >> 8), byte(port), 127, 0, 0, 1, 0})
	var head [8]byte
	if _, err := io.ReadFull(c4, head[:]); err != nil || head[1] != 0x5a {
		t.Fatalf("SOCKS4: %v %x", err, head)
	}
	c4.Close()

	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n >= 5 {
			break
		}
	}
	mu.Lock()
	defer mu.Unlock()
	want := map[string]observe.Access{
		"socks5 ok.test":      {Frontend: "socks5", Verdict: "allow", Host: "ok.test", Up: 4, Down: 4},
		"socks5 blocked.test": {Frontend: "socks5", Verdict: "block", Category: "games", Host: "blocked.test"},
		"socks5 closed.test":  {Frontend: "socks5", Verdict: "allow", Host: "closed.test"},
		"socks5 guarded.test": {Frontend: "socks5", Verdict: "block", Category: "lan", Host: "guarded.test"},
		"socks4 127.0.0.1":    {Frontend: "socks4", Verdict: "allow", Host: "127.0.0.1"},
	}
	if len(got) != len(want) {
		t.Fatalf("reports %+v, want %d", got, len(want))
	}
	for k, w := range want {
		g := got[k]
		dialErr := g.DialErr
		g.DialErr = nil
		if g != w {
			t.Errorf("%s: %+v, want %+v", k, got[k], w)
		}
		if (k == "socks5 closed.test") != (dialErr != nil) {
			t.Errorf("%s: dial error %v", k, dialErr)
		}
	}
	if k := dial.Classify(got["socks5 closed.test"].DialErr); k != dial.KindRefused {
		t.Errorf("failed dial classified %v, want refused", k)
	}
}
