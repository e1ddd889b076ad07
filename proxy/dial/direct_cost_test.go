package dial

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"
)

// acceptAll accepts and closes connections on a loopback listener until
// the test ends.
func acceptAll(t testing.TB) net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return ln
}

// directDialAllocs bounds the allocations of one direct dial of an IP
// literal under a caller's deadline, the listener's accept included: 25.
// With a context and a timer of its own on top of the caller's it took 32;
// formatting the address again for net.Dialer and copying the vetted
// addresses, 28.
const directDialAllocs = 26

// TestDirectDialCost dials an IP literal as the HTTP front end does (its
// dial timeout already on the context; dialOrigin with a check) and bounds
// the allocations; the conn is a *net.TCPConn (splice, half-close) and the
// check saw the address dialed.
func TestDirectDialCost(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	ln := acceptAll(t)
	addr := ln.Addr().String()
	want := netip.MustParseAddrPort(addr)
	d := &Direct{Timeout: time.Minute}
	var checked netip.AddrPort
	check := func(ap netip.AddrPort) error { checked = ap; return nil }
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	allocs := testing.AllocsPerRun(200, func() {
		c, err := d.dialOrigin(ctx, "tcp", addr, check)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := c.(*net.TCPConn); !ok {
			t.Fatalf("dialed a %T, want *net.TCPConn", c)
		}
		c.Close()
	})
	if checked != want {
		t.Errorf("check saw %v, want %v", checked, want)
	}
	t.Logf("%.1f allocations per dial", allocs)
	if allocs > directDialAllocs {
		t.Errorf("%.1f allocations per dial, want at most %d", allocs, directDialAllocs)
	}
}

// TestDirectDialTimeoutUnderLongerDeadline: a caller's deadline later than
// Timeout does not lift Timeout.
func TestDirectDialTimeoutUnderLongerDeadline(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	var left time.Duration
	d := &Direct{Timeout: 3 * time.Second, LookupHook: func(ctx context.Context, host string) ([]netip.Addr, error) {
		dl, _ := ctx.Deadline()
		left = time.Until(dl)
		return nil, context.DeadlineExceeded
	}}
	d.DialContext(ctx, "tcp", "example.invalid:80")
	if left <= 0 || left > 3*time.Second {
		t.Errorf("the lookup had %v left, want at most Timeout (3s)", left)
	}
}

// BenchmarkDirectDial is one direct dial of an IP literal as the HTTP
// front end makes it (dialOrigin with a check, under its deadline), the
// listener's accept and both closes included.
func BenchmarkDirectDial(b *testing.B) {
	ln := acceptAll(b)
	addr := ln.Addr().String()
	d := &Direct{Timeout: time.Minute}
	check := func(netip.AddrPort) error { return nil }
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // earlier than Timeout, as the front ends
	defer cancel()
	b.ReportAllocs()
	for b.Loop() {
		c, err := d.dialOrigin(ctx, "tcp", addr, check)
		if err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}
