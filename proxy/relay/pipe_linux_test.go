package relay

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// withBudget sets the pipe budget for the rest of t, on an empty pool.
func withBudget(t *testing.T, budget int64) {
	emptyPipePool()
	if n := pipeBytes.Load(); n != 0 {
		t.Fatalf("%d bytes of pipe open before the test", n)
	}
	old := pipeBudget
	pipeBudget = budget
	t.Cleanup(func() {
		emptyPipePool()
		smallUntil.Store(0)
		pipeBudget = old
		makePipe, openPipe = newPipe, defaultOpenPipe
	})
}

var defaultOpenPipe = openPipe

// TestPipeBudget: new pipes are enlarged while the budget allows, kept at
// the kernel's default size beyond that, and not made at all when even
// that would overrun it; closing them gives the budget back.
func TestPipeBudget(t *testing.T) {
	withBudget(t, 2*int64(pipeAsk)+3*pipeMin+pipeMin/2)
	var got []*pipe
	var sizes []int
	for range 10 {
		p := getPipe()
		if p == nil {
			sizes = append(sizes, 0)
			continue
		}
		got = append(got, p)
		sz, err := unix.FcntlInt(uintptr(p.r), unix.F_GETPIPE_SZ, 0)
		if err != nil || sz != p.size {
			t.Fatalf("pipe says %d bytes, F_GETPIPE_SZ %d (%v)", p.size, sz, err)
		}
		sizes = append(sizes, p.size)
		if n := pipeBytes.Load(); n > pipeBudget {
			t.Fatalf("%d bytes of pipe open, over the budget of %d", n, pipeBudget)
		}
	}
	want := fmt.Sprint([]int{pipeAsk, pipeAsk, pipeMin, pipeMin, pipeMin, 0, 0, 0, 0, 0})
	if fmt.Sprint(sizes) != want {
		t.Fatalf("pipe sizes %v, want %v", sizes, want)
	}
	for _, p := range got {
		p.close()
	}
	if n := pipeBytes.Load(); n != 0 {
		t.Fatalf("%d bytes of pipe still counted after closing them all", n)
	}
}

// TestSmallPipesAreNotUsed: a pipe the kernel made smaller than pipeMin
// (as it does for a user over pipe-user-pages-soft, whose new pipes get 2
// pages and cannot be enlarged) is closed at once, no other is tried for
// smallPause, and the tunnel copies through a buffer instead, every byte
// exact.
func TestSmallPipesAreNotUsed(t *testing.T) {
	withBudget(t, 64*pipeWant)
	before := pipeFDs(t)
	var made atomic.Int32
	openPipe = func(fds []int) error {
		if err := defaultOpenPipe(fds); err != nil {
			return err
		}
		made.Add(1)
		_, err := unix.FcntlInt(uintptr(fds[0]), unix.F_SETPIPE_SZ, 8<<10)
		return err
	}
	for range 3 {
		if p := getPipe(); p != nil {
			t.Fatalf("got a pipe of %d bytes, want none below %d", p.size, pipeMin)
		}
	}
	if n := pipeFDs(t); n != before {
		t.Fatalf("a refused pipe left %d fds open", n-before)
	}
	if n := made.Load(); n != 1 {
		t.Fatalf("%d pipes made in a row, want 1: after a small one, no pipe for %v", n, smallPause)
	}
	smallUntil.Store(0) // the tunnel below tries again
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 11))
	up, down := make([]byte, 3<<20), make([]byte, 2<<20)
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
	if r := <-done; r.err != nil || r.st != (Stats{Up: int64(len(up)), Down: int64(len(down))}) {
		t.Fatalf("%+v %v", r.st, r.err)
	}
	if made.Load() < 2 {
		t.Fatalf("%d pipes were tried, want 2 at least", made.Load())
	}
	if n := pipeBytes.Load(); n != 0 {
		t.Fatalf("%d bytes of pipe counted, want 0", n)
	}
}

// TestManyBulkTunnels: 16 tunnels each move megabytes both ways at once
// with a budget of a few pipes. The readers start only once the budget has
// run out: until then every direction fills its destination's socket
// buffers and waits holding its pipe, so that some directions splice
// through large pipes, some through default-size ones and some copy
// through buffers, and they switch as pipes come and go. Every byte must
// arrive exactly, and the pipes open never exceed the budget.
func TestManyBulkTunnels(t *testing.T) {
	const tunnels = 16
	withBudget(t, 2*int64(pipeAsk)+4*pipeMin)
	var peak atomic.Int64
	var refused atomic.Int32
	var mu sync.Mutex
	sizes := map[int]int{}
	makePipe = func() *pipe {
		p := newPipe()
		for n := pipeBytes.Load(); ; {
			if old := peak.Load(); n <= old || peak.CompareAndSwap(old, n) {
				break
			}
		}
		if p == nil {
			refused.Add(1)
			return nil
		}
		mu.Lock()
		sizes[p.size]++
		mu.Unlock()
		return p
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	errs := make(chan error, 2*tunnels)
	read := make(chan struct{})
	for i := range tunnels {
		rng := rand.New(rand.NewPCG(seed, uint64(i)))
		up, down := make([]byte, 512<<10+rng.IntN(1<<20)), make([]byte, 512<<10+rng.IntN(1<<20))
		fillRandom(rng, up)
		fillRandom(rng, down)
		user, client := tcpPair(t)
		origin, server := tcpPair(t)
		// Small buffers between the splice and the readers, so that a
		// direction soon waits on its destination, holding its pipe.
		for _, c := range []*net.TCPConn{client, origin} {
			c.SetWriteBuffer(32 << 10)
		}
		for _, c := range []*net.TCPConn{user, server} {
			c.SetReadBuffer(32 << 10)
		}
		go func() {
			st, err := Splice(t.Context(), client, origin, time.Minute)
			if err == nil && st != (Stats{Up: int64(len(up)), Down: int64(len(down))}) {
				err = fmt.Errorf("stats %+v, want %d up, %d down", st, len(up), len(down))
			}
			errs <- err
		}()
		go func() {
			errs <- transfer(user, server, up, down, read)
		}()
	}
	for deadline := time.Now().Add(20 * time.Second); refused.Load() == 0 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	close(read)
	for range 2 * tunnels {
		select {
		case err := <-errs:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(2 * time.Minute):
			t.Fatal("the tunnels did not finish in 2 minutes")
		}
	}
	if p := peak.Load(); p > pipeBudget {
		t.Fatalf("%d bytes of pipe open at the peak, over the budget of %d", p, pipeBudget)
	}
	t.Logf("pipes made, by size: %v; refused %d; peak %d bytes of %d", sizes, refused.Load(), peak.Load(), pipeBudget)
	if sizes[pipeAsk] == 0 || sizes[pipeMin] == 0 || refused.Load() == 0 {
		t.Fatalf("pipes by size %v, %d refused: want some of %d bytes, of %d and refused", sizes, refused.Load(), pipeAsk, pipeMin)
	}
}

// transfer sends up from user and down from server at once, half-closes
// both, and checks that each side reads exactly what the other sent; the
// reads start when read is closed.
func transfer(user, server halfCloser, up, down []byte, read <-chan struct{}) error {
	send := func(c halfCloser, b []byte) {
		for len(b) > 0 {
			n := min(len(b), 100_000)
			if _, err := c.Write(b[:n]); err != nil {
				return
			}
			b = b[n:]
		}
		c.CloseWrite()
	}
	go send(user, up)
	go send(server, down)
	<-read
	var gotDown []byte
	var errDown error
	var wg sync.WaitGroup
	wg.Go(func() { gotDown, errDown = io.ReadAll(user) })
	gotUp, errUp := io.ReadAll(server)
	wg.Wait()
	switch {
	case errUp != nil || !bytes.Equal(gotUp, up):
		return fmt.Errorf("up: got %d bytes (err %v), want %d", len(gotUp), errUp, len(up))
	case errDown != nil || !bytes.Equal(gotDown, down):
		return fmt.Errorf("down: got %d bytes (err %v), want %d", len(gotDown), errDown, len(down))
	}
	return nil
}

// TestPipeLimitsFromSysctls: the budget is half of pipe-user-pages-soft
// (or 64 MiB when it is 0 or unreadable), and pipes are enlarged to
// pipe-max-size when that is below 1 MiB.
func TestPipeLimitsFromSysctls(t *testing.T) {
	page := int64(os.Getpagesize())
	for _, c := range []struct{ soft, want int64 }{{16384, 8192 * page}, {1024, 512 * page}, {0, 64 << 20}, {-1, 64 << 20}} {
		if got := budgetFor(c.soft); got != c.want {
			t.Errorf("budgetFor(%d) = %d, want %d", c.soft, got, c.want)
		}
	}
	for _, c := range []struct {
		limit int64
		want  int
	}{{1 << 20, 1 << 20}, {4 << 20, 1 << 20}, {256 << 10, 256 << 10}, {64 << 10, 64 << 10}, {4096, 1 << 20}, {-1, 1 << 20}} {
		if got := askFor(c.limit); got != c.want {
			t.Errorf("askFor(%d) = %d, want %d", c.limit, got, c.want)
		}
	}
}
