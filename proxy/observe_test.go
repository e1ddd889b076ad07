package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice/filter"
	"github.com/sluiceproxy/sluice/proxy/dial"
	"github.com/sluiceproxy/sluice/proxy/observe"
)

// TestObserve: each request reaches the Observe hook once, with its final
// verdict: allowed with its bytes, blocked with the rule's category and
// the host, a failed dial as allowed with the dial's error, an address the
// Guard refused as blocked without a dial error, and a bad request as
// none.
func TestObserve(t *testing.T) {
	page := "hello, observer"
	o := newOrigin(t, func(c net.Conn) {
		buf := make([]byte, 4096)
		c.Read(buf)
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(page), page)
	})
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()
	router, err := dial.NewRouter(dial.Config{Direct: &dial.Direct{Hosts: map[string][]netip.Addr{
		"ok.test": {netip.MustParseAddr("127.0.0.1")}, "guarded.test": {netip.MustParseAddr("127.0.0.1")},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []observe.Access
	f := newFixture(t, func(s *Server) {
		s.Dial = router.Dial
		s.Transport = router.Transport
		s.Guard = func(req *filter.Request, d *filter.Decision, addr netip.AddrPort) (*filter.Decision, error) {
			if req.Host == "guarded.test" {
				return &filter.Decision{Verdict: filter.Block, Reason: "private address", Category: "lan"}, dial.ErrBlocked
			}
			return nil, nil
		}
		s.Observe = func(a observe.Access) { mu.Lock(); got = append(got, a); mu.Unlock() }
	})
	t.Cleanup(router.CloseIdleConnections)
	cl := f.client(t, nil)
	for _, u := range []string{
		"http://ok.test:" + o.port() + "/",
		"http://blocked.test:" + o.port() + "/",
		"http://" + closedAddr + "/",
		"http://guarded.test:" + o.port() + "/",
	} {
		resp, err := cl.Get(u)
		if err != nil {
			t.Fatalf("GET %s: %v", u, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	c := f.raw(t)
	io.WriteString(c, "GET /not-a-proxy-request HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != 400 {
		t.Fatalf("origin-form request: %v %v", resp, err)
	}
	resp.Body.Close()
	c.Close()
	router.CloseIdleConnections()

	// The report follows the response: wait for it, bounded.
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
	if len(got) != 5 {
		t.Fatalf("%d reports, want 5: %+v", len(got), got)
	}
	want := []observe.Access{
		{Frontend: "http", Verdict: "allow", Host: "ok.test", Down: int64(len(page))},
		{Frontend: "http", Verdict: "block", Category: "social", Host: "blocked.test"},
		{Frontend: "http", Verdict: "allow", Host: "127.0.0.1"},
		{Frontend: "http", Verdict: "block", Category: "lan", Host: "guarded.test"},
		{Frontend: "http", Verdict: "none"},
	}
	for i, w := range want {
		g := got[i]
		if i != 0 {
			g.Down = 0 // the size of an error or block page is not the point
		}
		g.DialErr = nil
		if g != w {
			t.Errorf("report %d: %+v, want %+v", i, got[i], w)
		}
		if (i == 2) != (got[i].DialErr != nil) {
			t.Errorf("report %d: dial error %v", i, got[i].DialErr)
		}
	}
	if k := dial.Classify(got[2].DialErr); k != dial.KindRefused {
		t.Errorf("failed dial classified %v, want refused", k)
	}
}
