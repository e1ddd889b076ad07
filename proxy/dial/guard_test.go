package dial

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// acceptCounter is a listener that records the connections it accepts
// and closes each at once: the proof that a refused address was never
// dialed.
type acceptCounter struct {
	ln   net.Listener
	port string

	mu   sync.Mutex
	from []string // the peers accepted, in order
}

func countAccepts(t *testing.T, addr string) *acceptCounter {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	a := &acceptCounter{ln: ln}
	_, a.port, _ = net.SplitHostPort(ln.Addr().String())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			a.mu.Lock()
			a.from = append(a.from, c.RemoteAddr().String())
			a.mu.Unlock()
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return a
}

// settled returns how many connections the listener accepted so far: it
// connects once more itself and waits (at most 10s) until that marker is
// accepted, so that every earlier connection has been counted (a listener
// accepts in order). Markers are not counted.
func (a *acceptCounter) settled(t *testing.T) int {
	t.Helper()
	c, err := net.Dial("tcp", a.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	marker := c.LocalAddr().String()
	defer c.Close()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		a.mu.Lock()
		n, seen := 0, false
		for _, f := range a.from {
			switch {
			case f == marker:
				seen = true
			case !strings.HasPrefix(f, "marker:") && !seen:
				n++
			}
		}
		if seen {
			for i, f := range a.from {
				if f == marker {
					a.from[i] = "marker:" + f
				}
			}
			a.mu.Unlock()
			return n
		}
		a.mu.Unlock()
	}
	t.Fatalf("the listener never accepted the marker connection")
	return 0
}

// checkRecorder refuses the addresses in refuse (with err) and records
// every address it was asked about.
type checkRecorder struct {
	mu     sync.Mutex
	seen   []netip.AddrPort
	refuse map[netip.Addr]error
}

func (c *checkRecorder) check(ap netip.AddrPort) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seen = append(c.seen, ap)
	return c.refuse[ap.Addr()]
}

func (c *checkRecorder) asked() []netip.AddrPort {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]netip.AddrPort(nil), c.seen...)
}

// TestCheckRefusesBeforeDialing: on the direct route every resolved
// address passes the Check first; a refused one is never dialed, the others
// still are, and the refusal keeps its kind.
func TestCheckRefusesBeforeDialing(t *testing.T) {
	o9 := countAccepts(t, "127.0.0.9:0")
	o10 := countAccepts(t, "127.0.0.10:"+o9.port)
	var lookups atomic.Int64
	d := &Direct{
		Hosts: map[string][]netip.Addr{"hosted.test": {netip.MustParseAddr("127.0.0.9")}},
		LookupHook: func(_ context.Context, host string) ([]netip.Addr, error) {
			lookups.Add(1)
			switch host {
			case "blocked.test":
				return []netip.Addr{netip.MustParseAddr("127.0.0.9")}, nil
			case "mixed.test":
				return []netip.Addr{netip.MustParseAddr("127.0.0.9"), netip.MustParseAddr("::ffff:127.0.0.10")}, nil
			case "zero.test":
				return []netip.Addr{netip.MustParseAddr("0.0.0.0"), netip.MustParseAddr("::")}, nil
			case "self.test":
				return []netip.Addr{netip.MustParseAddr("127.0.0.8")}, nil
			}
			return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
		},
	}
	r, err := NewRouter(Config{Direct: d})
	if err != nil {
		t.Fatal(err)
	}
	rec := &checkRecorder{refuse: map[netip.Addr]error{
		netip.MustParseAddr("127.0.0.9"): fmt.Errorf("%w by rule 1", ErrBlocked),
		netip.MustParseAddr("127.0.0.8"): fmt.Errorf("%w: Sluice listens there", ErrLoop),
	}}
	ctx, cancel := context.WithTimeout(WithCheck(context.Background(), rec.check), 10*time.Second)
	defer cancel()
	for _, c := range []struct {
		target string
		kind   Kind
	}{
		{"blocked.test", KindBlocked},
		{"hosted.test", KindBlocked},
		{"127.0.0.9", KindBlocked},
		{"[::ffff:127.0.0.9]", KindBlocked},
		{"self.test", KindLoop},
		{"zero.test", KindUnspecified},
		{"0.0.0.0", KindUnspecified},
		{"[::]", KindUnspecified},
		{"[::ffff:0.0.0.0]", KindUnspecified},
	} {
		_, err := r.Dial(ctx, "", "tcp", c.target+":"+o9.port)
		if k := Classify(err); k != c.kind || !k.Refused() {
			t.Errorf("%s: %v (kind %v), want kind %v", c.target, err, k, c.kind)
		}
	}
	for _, ap := range rec.asked() {
		if ap.Addr().IsUnspecified() {
			t.Errorf("the check was asked about %s: unspecified addresses are refused before", ap)
		}
	}
	// One address refused, one allowed: only the allowed one is dialed.
	conn, err := r.Dial(ctx, "", "tcp", "mixed.test:"+o9.port)
	if err != nil {
		t.Fatal(err)
	}
	if got := conn.RemoteAddr().String(); got != "127.0.0.10:"+o9.port {
		t.Errorf("mixed.test dialed %s", got)
	}
	conn.Close()
	if n := o9.settled(t); n != 0 {
		t.Errorf("the refused address accepted %d connections", n)
	}
	if n := o10.settled(t); n != 1 {
		t.Errorf("the allowed address accepted %d connections, want 1", n)
	}
	if n := lookups.Load(); n != 4 { // blocked, self, zero, mixed: once each
		t.Errorf("%d lookups, want 4 (one per dial of a name)", n)
	}
	// Without a Check in the context nothing is refused but the
	// unspecified address.
	conn, err = r.Dial(context.Background(), "", "tcp", "blocked.test:"+o9.port)
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	if _, err := r.Dial(context.Background(), "", "tcp", "0.0.0.0:"+o9.port); Classify(err) != KindUnspecified {
		t.Errorf("0.0.0.0 without a check: %v", err)
	}
}

// TestCheckSeesTheDialedAddress: a name whose answers change between
// lookups (DNS rebinding) is resolved once per dial, and the address the
// Check decides is the address dialed.
func TestCheckSeesTheDialedAddress(t *testing.T) {
	o9 := countAccepts(t, "127.0.0.9:0")
	o10 := countAccepts(t, "127.0.0.10:"+o9.port)
	var lookups atomic.Int64
	d := &Direct{LookupHook: func(context.Context, string) ([]netip.Addr, error) {
		if lookups.Add(1)%2 == 1 {
			return []netip.Addr{netip.MustParseAddr("127.0.0.10")}, nil
		}
		return []netip.Addr{netip.MustParseAddr("127.0.0.9")}, nil
	}}
	r, err := NewRouter(Config{Direct: d})
	if err != nil {
		t.Fatal(err)
	}
	rec := &checkRecorder{refuse: map[netip.Addr]error{netip.MustParseAddr("127.0.0.9"): ErrBlocked}}
	ctx := WithCheck(context.Background(), rec.check)
	for i := range 6 {
		conn, err := r.Dial(ctx, "", "tcp", "rebind.test:"+o9.port)
		asked := rec.asked()
		last := asked[len(asked)-1]
		switch {
		case len(asked) != i+1:
			t.Fatalf("dial %d: the check was asked %d times in all", i, len(asked))
		case err == nil && conn.RemoteAddr().String() != last.String():
			t.Errorf("dial %d: checked %s, dialed %s", i, last, conn.RemoteAddr())
		case err != nil && last.Addr() != netip.MustParseAddr("127.0.0.9"):
			t.Errorf("dial %d: refused %v after checking %s", i, err, last)
		}
		if conn != nil {
			conn.Close()
		}
	}
	if n := lookups.Load(); n != 6 {
		t.Errorf("%d lookups for 6 dials", n)
	}
	if n9, n10 := o9.settled(t), o10.settled(t); n9 != 0 || n10 != 3 {
		t.Errorf("accepts: %d at the refused address (want 0), %d at the allowed one (want 3)", n9, n10)
	}
}

// TestCheckNotForUpstreams: the Check decides the final hop of the direct
// route only; an upstream's own address is not checked, and the upstream
// resolves the destination. An unspecified target is refused on every
// route.
func TestCheckNotForUpstreams(t *testing.T) {
	origin := startOrigin(t, banner)
	up := startConnectProxy(t, &connectProxy{}, nil)
	r, err := NewRouter(Config{Routes: map[string]RouteSpec{"up": {Chain: []*url.URL{mustURL(t, "http://"+up.addr())}}}})
	if err != nil {
		t.Fatal(err)
	}
	rec := &checkRecorder{refuse: map[netip.Addr]error{netip.MustParseAddr("127.0.0.1"): ErrBlocked}}
	ctx, cancel := context.WithTimeout(WithCheck(context.Background(), rec.check), 10*time.Second)
	defer cancel()
	c, err := r.Dial(ctx, "up", "tcp", origin.addr())
	if err != nil {
		t.Fatal(err)
	}
	exchange(t, c, banner, false)
	c.Close()
	if asked := rec.asked(); len(asked) != 0 {
		t.Errorf("the check was asked about %v on an upstream route", asked)
	}
	if _, err := r.Dial(ctx, "direct", "tcp", origin.addr()); Classify(err) != KindBlocked {
		t.Errorf("direct: %v, want blocked", err)
	}
	if _, err := r.Dial(ctx, "up", "tcp", fmt.Sprintf("0.0.0.0:%d", origin.port())); Classify(err) != KindUnspecified {
		t.Errorf("0.0.0.0 via the upstream: %v, want unspecified", err)
	}
}

// TestCheckedTransportRechecksPooled: the direct route's Transport checks
// a pooled connection again for each request that would reuse it.
func TestCheckedTransportRechecksPooled(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var accepts atomic.Int64
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })}
	srv.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			accepts.Add(1)
		}
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	r, err := NewRouter(Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.CloseIdleConnections()
	tr := r.Transport("direct")
	get := func(check Check) (*http.Response, error) {
		req, _ := http.NewRequestWithContext(WithCheck(context.Background(), check), "GET", "http://"+ln.Addr().String()+"/", nil)
		resp, err := tr.RoundTrip(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		return resp, err
	}
	allow := func(netip.AddrPort) error { return nil }
	refuse := func(netip.AddrPort) error { return ErrBlocked }
	if _, err := get(allow); err != nil {
		t.Fatal(err)
	}
	if _, err := get(allow); err != nil || accepts.Load() != 1 {
		t.Fatalf("second allowed request: %v, %d accepts (want the pooled connection)", err, accepts.Load())
	}
	if resp, err := get(refuse); err == nil {
		t.Fatalf("refused request got %s over the pooled connection", resp.Status)
	} else if Classify(err) != KindBlocked {
		t.Errorf("refused request: %v, want blocked", err)
	}
	if n := accepts.Load(); n != 1 {
		t.Errorf("%d accepts: the refused request dialed", n)
	}
}

// TestLookupIgnoresCgo: names resolve through Go's own resolver even when
// GODEBUG asks for the C library's, which reads "0x7f000002" as
// 127.0.0.2 (issue 9 item 3). The child process proves both halves.
func TestLookupIgnoresCgo(t *testing.T) {
	if os.Getenv("SLUICE_DIAL_CGO_CHILD") == "1" {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip4", "0x7f000002"); err == nil {
			fmt.Printf("LIBC %v\n", addrs)
		}
		if addrs, err := (&Direct{}).Lookup(ctx, "0x7f000002"); err == nil {
			fmt.Printf("DIRECT %v\n", addrs)
		}
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestLookupIgnoresCgo$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), "SLUICE_DIAL_CGO_CHILD=1", "GODEBUG=netdns=cgo")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "LIBC [127.0.0.2]") {
		t.Fatalf("the C library did not read 0x7f000002 as an address; the test proves nothing:\n%s", out)
	}
	if strings.Contains(string(out), "DIRECT") {
		t.Errorf("Direct resolved 0x7f000002 through the C library:\n%s", out)
	}
}
