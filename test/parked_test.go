package test

import (
	"errors"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestIdleTunnelsHoldNoGoroutine opens 100 HTTP CONNECT and 100 SOCKS5
// tunnels, each moving a few bytes, and leaves them idle: the proxy's
// goroutines must not grow with them (a direction that waits for bytes
// parks in the relay's epoll instead of holding a goroutine; before, two
// per tunnel). Then timeouts.idle ends every one of them: each client sees
// a reset, and each tunnel's access line says it ended idle.
func TestIdleTunnelsHoldNoGoroutine(t *testing.T) {
	const (
		perKind = 100
		slack   = 40
	)
	p := startSluice(t, idleConfig+"timeouts: {idle: 6s}\n", nil)
	admin := p.adminAddr(t)
	echo := newTCPEcho(t)
	openIdleTunnel(t, p.addr, echo.addr, "connect").Close() // what is built once is in the baseline
	openIdleTunnel(t, p.addr, echo.addr, "socks5").Close()
	base := settle(t, p, admin)
	var conns []net.Conn
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	opened := time.Now()
	for _, kind := range []string{"connect", "socks5"} {
		for range perKind {
			conns = append(conns, openIdleTunnel(t, p.addr, echo.addr, kind))
		}
	}
	if time.Since(opened) > 4*time.Second {
		t.Fatalf("opening %d tunnels took %v, too close to the idle timeout for the count below", len(conns), time.Since(opened))
	}
	now := measure(t, p, admin, false)
	for deadline := time.Now().Add(3 * time.Second); now.goroutines > base.goroutines+slack && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
		now = measure(t, p, admin, false)
	}
	t.Logf("%d idle tunnels: %d goroutines, baseline %d", len(conns), now.goroutines, base.goroutines)
	if now.goroutines > base.goroutines+slack {
		t.Errorf("%d idle tunnels hold %d goroutines more than the baseline, want at most %d", len(conns), now.goroutines-base.goroutines, slack)
	}
	for i, c := range conns {
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("tunnel %d after the idle timeout: %v, want a reset", i, err)
		}
	}
	eventually(t, "an access line for every tunnel", func() bool {
		return strings.Count(p.Log(), `"err":"relay: idle timeout"`) >= len(conns)
	})
}
