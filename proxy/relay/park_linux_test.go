package relay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"runtime"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// tunnel is a path started with Start: user ⇄ [client | Start | origin] ⇄ server.
type tunnel struct {
	user, client, origin, server *net.TCPConn
	done                         chan result
}

func startTunnel(t *testing.T, ctx context.Context, idle time.Duration) *tunnel {
	t.Helper()
	tu := &tunnel{done: make(chan result, 2)}
	tu.user, tu.client = tcpPair(t)
	tu.origin, tu.server = tcpPair(t)
	Start(ctx, tu.client, tu.origin, idle, func(st Stats, err error) { tu.done <- result{st, err} })
	return tu
}

// ping moves a few bytes each way, so that both directions have copied
// something before they wait.
func (tu *tunnel) ping(t *testing.T) {
	t.Helper()
	for _, p := range [][2]*net.TCPConn{{tu.user, tu.server}, {tu.server, tu.user}} {
		if _, err := p[0].Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		p[1].SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(p[1], make([]byte, 4)); err != nil {
			t.Fatal(err)
		}
	}
}

func (tu *tunnel) wait(t *testing.T) result {
	t.Helper()
	select {
	case r := <-tu.done:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("done was not called")
		return result{}
	}
}

// settleGoroutines waits until at most want goroutines run, and returns
// how many do.
func settleGoroutines(want int) int {
	n := runtime.NumGoroutine()
	for deadline := time.Now().Add(10 * time.Second); n > want && time.Now().Before(deadline); n = runtime.NumGoroutine() {
		time.Sleep(5 * time.Millisecond)
	}
	return n
}

// parked returns the number of parked directions.
func parked() int {
	p := getParker()
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.parked
}

func waitParked(t *testing.T, n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); parked() < n; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d directions parked, want %d", parked(), n)
		}
	}
}

// TestIdleTunnelsHoldNoGoroutine: the tunnels of Start that wait for
// bytes hold no goroutine (Go's poller would hold one per direction); when
// bytes come, each direction carries on: small and large transfers both
// ways, half-closes and exact counts.
func TestIdleTunnelsHoldNoGoroutine(t *testing.T) {
	const tunnels = 40
	base := runtime.NumGoroutine()
	var tus []*tunnel
	for range tunnels {
		tu := startTunnel(t, t.Context(), time.Minute)
		tu.ping(t)
		tus = append(tus, tu)
	}
	if n := settleGoroutines(base + 4); n > base+4 {
		t.Fatalf("%d idle tunnels: %d goroutines more than before, want at most 4", tunnels, n-base)
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 11))
	for i, tu := range tus {
		size := 100 + i*10_000 // up to 390 KB: some are spliced through pipes
		up, down := make([]byte, size), make([]byte, size/2)
		fillRandom(rng, up)
		fillRandom(rng, down)
		exchange(t, rng, tu.user, tu.server, up, down, up, down)
		r := tu.wait(t)
		if r.err != nil || r.st != (Stats{Up: int64(4 + len(up)), Down: int64(4 + len(down))}) {
			t.Fatalf("tunnel %d: %+v", i, r)
		}
	}
}

// TestParkedTunnelIdleTimeout: a tunnel whose two directions are parked
// ends as idle after its timeout, and both peers see a reset.
func TestParkedTunnelIdleTimeout(t *testing.T) {
	tu := startTunnel(t, t.Context(), 200*time.Millisecond)
	tu.ping(t)
	r := tu.wait(t)
	if !errors.Is(r.err, ErrIdle) || r.st != (Stats{Up: 4, Down: 4}) {
		t.Errorf("result %+v, want ErrIdle after 4 bytes each way", r)
	}
	for name, c := range map[string]*net.TCPConn{"user": tu.user, "server": tu.server} {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("%s read after the idle timeout: %v, want a reset", name, err)
		}
	}
}

// TestParkedTunnelBusyOneWay: a direction that stays parked while bytes
// flow the other way is not idle.
func TestParkedTunnelBusyOneWay(t *testing.T) {
	const idle = 300 * time.Millisecond
	tu := startTunnel(t, t.Context(), idle)
	go io.Copy(io.Discard, tu.server)
	for range 20 { // 1 s: more than three idle timeouts
		if _, err := tu.user.Write([]byte("tick")); err != nil {
			t.Fatalf("write: %v", err)
		}
		time.Sleep(idle / 6)
	}
	select {
	case r := <-tu.done:
		t.Fatalf("the tunnel ended while bytes flowed up: %+v", r)
	default:
	}
	tu.user.CloseWrite()
	tu.server.CloseWrite()
	if r := tu.wait(t); r.err != nil || r.st.Up != 80 {
		t.Errorf("result %+v, want no error and 80 bytes up", r)
	}
}

// TestParkedTunnelCancel: ctx's end ends a parked tunnel at once, with
// resets, and its hold is released.
func TestParkedTunnelCancel(t *testing.T) {
	released := make(chan struct{})
	ctx, cancel := context.WithCancel(WithHold(t.Context(), func() func() {
		return func() { close(released) }
	}))
	defer cancel()
	tu := startTunnel(t, ctx, time.Minute)
	tu.ping(t)
	waitParked(t, 2)
	cancel()
	if r := tu.wait(t); !errors.Is(r.err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", r.err)
	}
	select {
	case <-released:
	case <-time.After(10 * time.Second):
		t.Fatal("the hold was not released")
	}
	tu.server.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := tu.server.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("server read after the cancel: %v, want a reset", err)
	}
}

// TestParkedTunnelClosedElsewhere: the client conn of a parked tunnel is
// cut by someone else (a connection's lifetime, a server's hard stop):
// closing an fd takes it out of the epoll instance without an event, yet
// the tunnel ends, with an error, and the origin's peer is reset.
func TestParkedTunnelClosedElsewhere(t *testing.T) {
	tu := startTunnel(t, t.Context(), time.Minute)
	tu.ping(t)
	waitParked(t, 2)
	Cut(tu.client)
	var de *DirError
	if r := tu.wait(t); !errors.As(r.err, &de) {
		t.Errorf("err = %v, want a *DirError", r.err)
	}
	// The server read the user's EOF already (CLOSE_WAIT), where a RST
	// makes the next write fail (EPIPE); after a FIN it would succeed.
	tu.server.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := tu.server.Write([]byte("x")); !errors.Is(err, syscall.EPIPE) && !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("server write after the client was cut: %v, want the error of a reset", err)
	}
}

// TestParkStress runs tunnels that alternate bursts both ways with pauses
// longer and shorter than parkAfter (so that their directions park and
// wake again and again), beside tunnels cancelled at random moments, all
// at once: every byte must arrive once and in order, every done must be
// called once with the right result.
func TestParkStress(t *testing.T) {
	const (
		tunnels   = 24
		cancelled = 8
		rounds    = 4
	)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	type outcome struct {
		i   int
		err error
	}
	out := make(chan outcome, tunnels+cancelled)
	for i := range tunnels + cancelled {
		ctx, cancel := context.WithCancel(t.Context())
		tu := startTunnel(t, ctx, time.Minute)
		rng := rand.New(rand.NewPCG(seed, uint64(i)))
		go func() {
			defer cancel()
			if i >= tunnels { // cancelled at a random moment, parked or not
				time.Sleep(time.Duration(rng.IntN(400)) * time.Millisecond)
				cancel()
				r := tu.waitResult()
				if !errors.Is(r.err, context.Canceled) {
					out <- outcome{i, fmt.Errorf("cancelled tunnel: %v", r.err)}
					return
				}
				out <- outcome{i, nil}
				return
			}
			var up, down int64
			for range rounds {
				time.Sleep(time.Duration(rng.IntN(250)) * time.Millisecond)
				for _, d := range []struct {
					from, to *net.TCPConn
					n        *int64
				}{{tu.user, tu.server, &up}, {tu.server, tu.user, &down}} {
					b := make([]byte, 1+rng.IntN(200_000))
					fillRandom(rng, b)
					go d.from.Write(b)
					got := make([]byte, len(b))
					d.to.SetReadDeadline(time.Now().Add(10 * time.Second))
					if _, err := io.ReadFull(d.to, got); err != nil || !bytes.Equal(got, b) {
						out <- outcome{i, fmt.Errorf("burst of %d bytes: %v", len(b), err)}
						return
					}
					*d.n += int64(len(b))
				}
			}
			tu.user.CloseWrite()
			tu.server.CloseWrite()
			r := tu.waitResult()
			if r.err != nil || r.st != (Stats{Up: up, Down: down}) {
				out <- outcome{i, fmt.Errorf("result %+v, want up %d down %d", r, up, down)}
				return
			}
			out <- outcome{i, nil}
		}()
	}
	maxParked := 0
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	timeout := time.After(30 * time.Second)
	for left := tunnels + cancelled; left > 0; {
		select {
		case o := <-out:
			left--
			if o.err != nil {
				t.Errorf("tunnel %d: %v", o.i, o.err)
			}
		case <-tick.C:
			maxParked = max(maxParked, parked())
		case <-timeout:
			t.Fatal("a tunnel did not finish")
		}
	}
	if maxParked == 0 {
		t.Error("no direction ever parked")
	}
	t.Logf("at most %d directions parked at once", maxParked)
}

// waitResult is wait for other goroutines than the test's: it returns an
// error result instead of failing the test.
func (tu *tunnel) waitResult() result {
	select {
	case r := <-tu.done:
		return r
	case <-time.After(10 * time.Second):
		return result{err: errors.New("done was not called")}
	}
}

// TestHalfClosedParkedTunnelCutElsewhere: the user half-closed its side
// (client→origin ended with EOF), so only origin→client is parked, on the
// origin socket; then the client conn is cut by someone else (a
// connection's lifetime). The parked direction's source is still open, yet
// the tunnel must end with an error at once (not after the idle timeout,
// here a minute) and the origin's peer must see a reset.
func TestHalfClosedParkedTunnelCutElsewhere(t *testing.T) {
	tu := startTunnel(t, t.Context(), time.Minute)
	tu.ping(t)
	tu.user.CloseWrite()
	tu.server.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := tu.server.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("server read after the user's half-close: %d, %v; want EOF", n, err)
	}
	waitParked(t, 1)
	Cut(tu.client)
	var de *DirError
	if r := tu.wait(t); !errors.As(r.err, &de) {
		t.Errorf("err = %v, want a *DirError", r.err)
	}
	// The server read the user's EOF already (CLOSE_WAIT), where a RST
	// makes the next write fail (EPIPE); after a FIN it would succeed.
	tu.server.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := tu.server.Write([]byte("x")); !errors.Is(err, syscall.EPIPE) && !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("server write after the client was cut: %v, want the error of a reset", err)
	}
}

// fdOf returns c's file descriptor number.
func fdOf(t *testing.T, c *net.TCPConn) int {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	fd := -1
	rc.Control(func(u uintptr) { fd = int(u) })
	return fd
}

// TestParkedFDReused: the client socket of a parked tunnel is closed
// elsewhere and its fd number is taken at once by the client socket of a
// new tunnel, which parks too (an fd number in epoll again, with another
// open file). The old registration must never act on the new tunnel: the
// old one ends with an error, the new one moves its bytes exactly, parks
// and wakes again, and ends cleanly.
func TestParkedFDReused(t *testing.T) {
	old := startTunnel(t, t.Context(), time.Minute)
	old.ping(t)
	waitParked(t, 2)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	fd := fdOf(t, old.client)
	Cut(old.client)
	// Take the number back: a new socket gets the lowest free number.
	var client, user *net.TCPConn
	var seen []int
	for range 20 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		a, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(); a.Close() })
		if f := fdOf(t, c.(*net.TCPConn)); f == fd {
			client, user = c.(*net.TCPConn), a.(*net.TCPConn)
			break
		} else {
			seen = append(seen, f)
		}
	}
	if client == nil {
		t.Fatalf("fd %d was not reused; new sockets got %v", fd, seen)
	}
	// The new tunnel starts and parks on fd while the old one may still
	// be parked on it (until the sweep notices the close).
	tu := &tunnel{done: make(chan result, 2), user: user, client: client}
	tu.origin, tu.server = tcpPair(t)
	Start(t.Context(), tu.client, tu.origin, time.Minute, func(st Stats, err error) { tu.done <- result{st, err} })
	var up, down int64
	for range 3 {
		tu.ping(t)
		up, down = up+4, down+4
		waitParked(t, 2)
	}
	tu.user.CloseWrite()
	tu.server.CloseWrite()
	if r := tu.wait(t); r.err != nil || r.st != (Stats{Up: up, Down: down}) {
		t.Errorf("the new tunnel on fd %d: %+v, want no error and %d bytes each way", fd, r, up)
	}
	var de *DirError
	if r := old.wait(t); !errors.As(r.err, &de) {
		t.Errorf("the old tunnel: err = %v, want a *DirError", r.err)
	}
}

// TestParkFailsIdleTimeout: when a direction cannot park (epoll_ctl fails:
// the user's epoll watches are used up) it waits in Go's poller, and its
// tunnel's idle timeout still applies: parking had cleared its read
// deadline, so that the timeout was the sweep's alone.
func TestParkFailsIdleTimeout(t *testing.T) {
	epollCtl = func(int, int, int, *unix.EpollEvent) error { return unix.ENOSPC }
	defer func() { epollCtl = unix.EpollCtl }()
	tu := startTunnel(t, t.Context(), 500*time.Millisecond)
	tu.ping(t)
	r := tu.wait(t)
	if !errors.Is(r.err, ErrIdle) || r.st != (Stats{Up: 4, Down: 4}) {
		t.Errorf("result %+v, want ErrIdle after 4 bytes each way", r)
	}
	if n := parked(); n != 0 {
		t.Errorf("%d directions parked, want none", n)
	}
}
