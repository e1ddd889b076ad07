package relay

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// opaque hides a conn's type (and so its socket) from Splice, which then
// takes the buffered path that TLS conns take; like *tls.Conn it keeps
// half-close and reveals its conn with NetConn.
type opaque struct{ net.Conn }

func (o opaque) CloseWrite() error { return o.Conn.(closeWriter).CloseWrite() }
func (o opaque) NetConn() net.Conn { return o.Conn }

// unixPair returns the two ends of one unix stream socket pair: conns that
// are sockets but not TCP, so Splice copies them through buffers.
func unixPair(t testing.TB) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "unix")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		return c.(*net.UnixConn)
	}
	a, b := conn(fds[0]), conn(fds[1])
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// halfCloser is what both sides of a test pipe can do.
type halfCloser interface {
	net.Conn
	CloseWrite() error
}

// exchange sends up from user to server and down from server to user at
// the same time, each in writes of random sizes, half-closes both and
// checks that each side read exactly what the other sent, then EOF.
// wantUp and wantDown are what should arrive: what was sent after the
// bytes pending on the other side.
func exchange(t *testing.T, rng *rand.Rand, user, server halfCloser, up, down, wantUp, wantDown []byte) {
	t.Helper()
	send := func(c halfCloser, b []byte, seed uint64) {
		r := rand.New(rand.NewPCG(seed, 1))
		for len(b) > 0 {
			n := min(len(b), 1+r.IntN(200_000))
			if _, err := c.Write(b[:n]); err != nil {
				return
			}
			b = b[n:]
		}
		c.CloseWrite()
	}
	go send(user, up, rng.Uint64())
	go send(server, down, rng.Uint64())
	var gotDown []byte
	var errDown error
	var wg sync.WaitGroup
	wg.Go(func() { gotDown, errDown = io.ReadAll(user) })
	gotUp, errUp := io.ReadAll(server)
	wg.Wait()
	if errUp != nil || !bytes.Equal(gotUp, wantUp) {
		t.Fatalf("up: got %d bytes (err %v), want %d", len(gotUp), errUp, len(wantUp))
	}
	if errDown != nil || !bytes.Equal(gotDown, wantDown) {
		t.Fatalf("down: got %d bytes (err %v), want %d", len(gotDown), errDown, len(wantDown))
	}
}

// TestSpliceExactBytes moves random amounts both ways at once, in writes
// of random sizes, through each path: splice(2) between TCP sockets,
// splice(2) without pipes (none can be made: the buffer fallback), and the
// buffered copy of conns that are not TCP (a hidden TCP conn, unix
// sockets). Every byte must arrive once and in order, both EOFs must
// propagate, and the counts must be exact.
func TestSpliceExactBytes(t *testing.T) {
	paths := []struct {
		name    string
		noPipes bool
		pair    func(t *testing.T) (user, client, origin, server halfCloser)
	}{
		{"tcp splice", false, func(t *testing.T) (halfCloser, halfCloser, halfCloser, halfCloser) {
			u, c := tcpPair(t)
			o, s := tcpPair(t)
			return u, c, o, s
		}},
		{"tcp without pipes", true, func(t *testing.T) (halfCloser, halfCloser, halfCloser, halfCloser) {
			u, c := tcpPair(t)
			o, s := tcpPair(t)
			return u, c, o, s
		}},
		{"opaque client", false, func(t *testing.T) (halfCloser, halfCloser, halfCloser, halfCloser) {
			u, c := tcpPair(t)
			o, s := tcpPair(t)
			return u, opaque{c}, o, s
		}},
		{"unix sockets", false, func(t *testing.T) (halfCloser, halfCloser, halfCloser, halfCloser) {
			u, c := unixPair(t)
			o, s := unixPair(t)
			return u, c, o, s
		}},
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	for i, p := range paths {
		t.Run(p.name, func(t *testing.T) {
			if p.noPipes {
				noPipes(t)
			}
			rng := rand.New(rand.NewPCG(seed, uint64(i)))
			for round := range 4 {
				up, down := make([]byte, rng.IntN(3<<20)), make([]byte, rng.IntN(3<<20))
				if round == 0 {
					up = up[:rng.IntN(3)] // also nothing or a byte or two
				}
				fillRandom(rng, up)
				fillRandom(rng, down)
				user, client, origin, server := p.pair(t)
				done := make(chan result, 1)
				go func() {
					st, err := Splice(t.Context(), WithPrefix(client, []byte("pre-")), origin, time.Minute)
					done <- result{st, err}
				}()
				exchange(t, rng, user, server, up, down, append([]byte("pre-"), up...), down)
				r := <-done
				if r.err != nil {
					t.Fatalf("round %d: err = %v", round, r.err)
				}
				want := Stats{Up: int64(len("pre-") + len(up)), Down: int64(len(down))}
				if r.st != want {
					t.Fatalf("round %d: stats %+v, want %+v", round, r.st, want)
				}
			}
		})
	}
}

// noPipes makes every new pipe fail, as when the process is out of fds,
// for the rest of t, and empties the pool.
func noPipes(t *testing.T) {
	emptyPipePool()
	makePipe = func() *pipe { return nil }
	t.Cleanup(func() { makePipe = newPipe })
}

func fillRandom(rng *rand.Rand, b []byte) {
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
}

// TestSplicePrefixBothWays forwards pending bytes on both sides first.
func TestSplicePrefixBothWays(t *testing.T) {
	user, client := tcpPair(t)
	origin, server := tcpPair(t)
	done := make(chan result, 1)
	go func() {
		st, err := Splice(t.Context(), WithPrefix(client, []byte("C")), WithPrefix(origin, []byte("O")), time.Minute)
		done <- result{st, err}
	}()
	exchange(t, rand.New(rand.NewPCG(1, 2)), user, server, []byte("up"), []byte("down"), []byte("Cup"), []byte("Odown"))
	if r := <-done; r.err != nil || r.st != (Stats{Up: 3, Down: 5}) {
		t.Errorf("result %+v, want up 3 down 5", r)
	}
}

// TestSpliceResetPropagates: when the origin resets the connection in the
// middle of a transfer, the client must see a reset too, never a clean
// EOF that would make the cut transfer look complete.
func TestSpliceResetPropagates(t *testing.T) {
	for _, tc := range []struct {
		name string
		wrap func(net.Conn) net.Conn
	}{
		{"tcp", nil},
		{"buffered", func(c net.Conn) net.Conn { return opaque{c} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := start(t, t.Context(), time.Minute, tc.wrap)
			if _, err := f.server.Write([]byte("partial")); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, len("partial"))
			if _, err := io.ReadFull(f.user, got); err != nil {
				t.Fatal(err)
			}
			f.server.SetLinger(0)
			f.server.Close() // RST
			r := f.wait(t)
			var de *DirError
			if !errors.As(r.err, &de) {
				t.Errorf("err = %v, want a *DirError", r.err)
			}
			f.user.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.ReadAll(f.user); !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("client read after the origin's reset: %v, want a reset", err)
			}
		})
	}
}

// TestSpliceIdleResets: a tunnel ended by the idle timeout is reset on
// both sides.
func TestSpliceIdleResets(t *testing.T) {
	f := start(t, t.Context(), 50*time.Millisecond, nil)
	if r := f.wait(t); !errors.Is(r.err, ErrIdle) {
		t.Fatalf("err = %v, want ErrIdle", r.err)
	}
	for name, c := range map[string]*net.TCPConn{"user": f.user, "server": f.server} {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("%s read after the idle timeout: %v, want a reset", name, err)
		}
	}
}

// TestSpliceBusyOneWayIsNotIdle: bytes flowing one way keep a tunnel
// whose other direction is silent open past the idle timeout (on each
// path: the read deadline of the silent direction is moved on).
func TestSpliceBusyOneWayIsNotIdle(t *testing.T) {
	for _, tc := range []struct {
		name string
		wrap func(net.Conn) net.Conn
	}{
		{"tcp", nil},
		{"buffered", func(c net.Conn) net.Conn { return opaque{c} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A tick every tenth of the idle timeout: the test stands a
			// stall of nine tenths of it on a loaded machine (with 400 ms
			// and ticks every 50 ms it failed about once in ten runs at
			// load average 8).
			const idle = time.Second
			const ticks = 25 // 2.5 s: two and a half idle timeouts
			f := start(t, t.Context(), idle, tc.wrap)
			go io.Copy(io.Discard, f.server)
			for range ticks {
				if _, err := f.user.Write([]byte("tick")); err != nil {
					t.Fatalf("write: %v", err)
				}
				time.Sleep(idle / 10)
			}
			select {
			case r := <-f.done:
				t.Fatalf("the splice ended while bytes flowed up: %+v", r)
			default:
			}
			f.user.CloseWrite()
			f.server.CloseWrite()
			if r := f.wait(t); r.err != nil || r.st.Up != ticks*4 {
				t.Errorf("result %+v, want no error and %d bytes up", r, ticks*4)
			}
		})
	}
}

// TestStart: done is called once, after both conns are closed, with the
// counts; the context's hold is taken for the tunnel's life.
func TestStart(t *testing.T) {
	user, client := tcpPair(t)
	origin, server := tcpPair(t)
	var held, released atomic.Int32
	ctx := WithHold(t.Context(), func() func() {
		held.Add(1)
		return func() { released.Add(1) }
	})
	done := make(chan result, 2)
	Start(ctx, client, origin, time.Minute, func(st Stats, err error) {
		if _, werr := client.Write([]byte("x")); werr == nil {
			t.Error("the client conn is still open in done")
		}
		done <- result{st, err}
	})
	if n := held.Load(); n != 1 {
		t.Fatalf("hold taken %d times, want 1", n)
	}
	exchange(t, rand.New(rand.NewPCG(3, 4)), user, server, []byte("hello"), []byte("world!"), []byte("hello"), []byte("world!"))
	select {
	case r := <-done:
		if r.err != nil || r.st != (Stats{Up: 5, Down: 6}) {
			t.Errorf("result %+v", r)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("done was not called")
	}
	time.Sleep(10 * time.Millisecond)
	if n := released.Load(); len(done) != 0 || n != 1 {
		t.Errorf("done called again (%d) or hold released %d times", len(done), n)
	}
}

// emptyPipePool closes the pipes the pool keeps.
func emptyPipePool() {
	pipes.mu.Lock()
	free := pipes.free
	pipes.free = nil
	pipes.mu.Unlock()
	for _, p := range free {
		p.close()
	}
}

// pipeFDs counts this process's open pipe fds.
func pipeFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && strings.HasPrefix(l, "pipe:") {
			n++
		}
	}
	return n
}

// TestIdleTunnelsHoldNoPipes: tunnels that moved bytes both ways and went
// quiet hold no pipe (Go's own splice path holds two pairs per tunnel
// while it waits). The pool's spare pipes are closed before counting.
func TestIdleTunnelsHoldNoPipes(t *testing.T) {
	const tunnels = 20
	emptyPipePool()
	before := pipeFDs(t)
	var fs []*fixture
	for range tunnels {
		f := start(t, t.Context(), time.Minute, nil)
		fs = append(fs, f)
		f.user.Write(bytes.Repeat([]byte("u"), 100_000))
		f.server.Write(bytes.Repeat([]byte("d"), 100_000))
		b := make([]byte, 100_000)
		if _, err := io.ReadFull(f.server, b); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(f.user, b); err != nil {
			t.Fatal(err)
		}
	}
	// A direction hands its pipe back just after its last write, which
	// the reads above may have overtaken: wait a little for that.
	deadline := time.Now().Add(10 * time.Second)
	for {
		emptyPipePool()
		n := pipeFDs(t)
		if n <= before {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d idle tunnels hold %d pipe fds", tunnels, n-before)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, f := range fs {
		f.user.Close()
		f.server.Close()
		f.wait(t)
	}
}

// TestPipePoolTrims: the pool keeps the pipes given back, and closes them
// once they have been unused for pipeKeep, so that a quiet proxy holds none.
func TestPipePoolTrims(t *testing.T) {
	emptyPipePool()
	before := pipeFDs(t)
	var ps []*pipe
	for range 3 {
		p := getPipe()
		if p == nil {
			t.Fatal("no pipe")
		}
		ps = append(ps, p)
	}
	for _, p := range ps {
		putPipe(p)
	}
	if n := pipeFDs(t); n != before+6 {
		t.Fatalf("3 pooled pipes: %d pipe fds more, want 6", n-before)
	}
	deadline := time.Now().Add(pipeKeep + 10*time.Second)
	for pipeFDs(t) > before {
		if time.Now().After(deadline) {
			t.Fatalf("the pool still holds %d pipe fds after %v", pipeFDs(t)-before, pipeKeep+10*time.Second)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestShortTunnelsTakeNoPipe: a tunnel that moves a few KiB each way
// copies them with read(2) and write(2) and never takes a pipe; one that
// moves more than spliceAfter splices the rest. Bytes and counts stay
// exact either way.
func TestShortTunnelsTakeNoPipe(t *testing.T) {
	emptyPipePool()
	var made atomic.Int32
	makePipe = func() *pipe { made.Add(1); return newPipe() }
	t.Cleanup(func() { makePipe = newPipe; emptyPipePool() })
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	for _, size := range []int{1, 1 << 10, 8 << 10, spliceAfter - 1, 4 * spliceAfter} {
		up, down := make([]byte, size), make([]byte, size)
		fillRandom(rng, up)
		fillRandom(rng, down)
		user, client := tcpPair(t)
		origin, server := tcpPair(t)
		done := make(chan result, 1)
		go func() {
			st, err := Splice(t.Context(), client, origin, time.Minute)
			done <- result{st, err}
		}()
		exchange(t, rng, user, server, up, down, up, down)
		r := <-done
		if r.err != nil || r.st != (Stats{Up: int64(size), Down: int64(size)}) {
			t.Fatalf("%d bytes each way: %+v %v", size, r.st, r.err)
		}
		switch n := made.Load(); {
		case size < spliceAfter && n != 0:
			t.Fatalf("%d bytes each way took %d pipes, want none", size, n)
		case size > spliceAfter && n == 0:
			t.Fatalf("%d bytes each way were never spliced", size)
		}
	}
}

// TestSecondEOFClosesWithoutShutdown: of two TCP directions ending
// cleanly, the first half-closes its destination and the second leaves it
// to the close that follows (one shutdown(2) less per tunnel); both peers
// still read everything and then EOF.
func TestSecondEOFClosesWithoutShutdown(t *testing.T) {
	var calls atomic.Int32
	closeWrite = func(cw closeWriter) error { calls.Add(1); return cw.CloseWrite() }
	t.Cleanup(func() { closeWrite = closeWriter.CloseWrite })
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 9))
	for _, size := range []int{0, 3000, 200_000} {
		calls.Store(0)
		user, client := tcpPair(t)
		origin, server := tcpPair(t)
		done := make(chan result, 1)
		go func() {
			st, err := Splice(t.Context(), client, origin, time.Minute)
			done <- result{st, err}
		}()
		up, down := make([]byte, size), make([]byte, size+100)
		fillRandom(rng, up)
		fillRandom(rng, down)
		exchange(t, rng, user, server, up, down, up, down)
		if r := <-done; r.err != nil {
			t.Fatal(r.err)
		}
		if n := calls.Load(); n != 1 {
			t.Errorf("%d bytes: %d half-closes, want 1", size, n)
		}
	}
}
