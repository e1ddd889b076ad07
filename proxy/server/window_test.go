package server

import (
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice/proxy/observe"
)

// fakeClock is a settable clock for the windows.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 3, 1, 8, 0, 30, 0, time.UTC)}
}

func TestMinuteRing(t *testing.T) {
	clk := newFakeClock()
	r := newMinuteRing(clk.now)
	r.add(false)
	r.add(true)
	clk.advance(time.Minute)
	r.add(true)
	req, blk := r.series()
	if req[59] != 1 || blk[59] != 1 || req[58] != 2 || blk[58] != 1 {
		t.Fatalf("last two minutes: req %v blk %v", req[58:], blk[58:])
	}
	for i := range 58 {
		if req[i] != 0 || blk[i] != 0 {
			t.Fatalf("minute %d has counts %d/%d before any traffic", i, req[i], blk[i])
		}
	}

	// 59 minutes later the first minute is the oldest shown; one more and
	// it is gone, even though its bucket was never reused.
	clk.advance(58 * time.Minute)
	req, _ = r.series()
	if req[0] != 2 || req[1] != 1 {
		t.Fatalf("59 minutes on: oldest buckets %v, want [2 1]", req[:2])
	}
	clk.advance(time.Minute)
	req, _ = r.series()
	if req[0] != 1 || sum(req[:]) != 1 {
		t.Fatalf("an hour on: %v, want only the second minute's 1 first", req)
	}

	// A bucket reused an hour later starts from zero.
	r.add(false)
	req, blk = r.series()
	if req[59] != 1 || blk[59] != 0 {
		t.Fatalf("reused bucket: %d/%d, want 1/0", req[59], blk[59])
	}
	// Hours of silence: nothing left.
	clk.advance(5 * time.Hour)
	if req, blk = r.series(); sum(req[:]) != 0 || sum(blk[:]) != 0 {
		t.Fatalf("after 5 idle hours: %v %v", req, blk)
	}
}

func sum(xs []int64) int64 {
	var n int64
	for _, x := range xs {
		n += x
	}
	return n
}

// TestSpaceSaving: heavy hitters survive a stream of distinct keys many
// times the sketch's size, the sketch never holds more than k keys, and
// every count over-estimates by at most its error.
func TestSpaceSaving(t *testing.T) {
	s := newSpaceSaving(8)
	truth := map[string]int64{}
	add := func(k string) { s.add(k); truth[k]++ }
	for i := range 10000 {
		add(fmt.Sprintf("rare%d.test", i)) // each seen once
		if i%3 == 0 {
			add("heavy.test")
		}
		if i%7 == 0 {
			add("medium.test")
		}
	}
	if len(s.items) > 8 || len(s.index) > 8 {
		t.Fatalf("sketch holds %d items, %d index entries; want at most 8", len(s.items), len(s.index))
	}
	keys := map[string]topCount{}
	for _, it := range s.items {
		keys[it.Key] = it
		if it.Count < truth[it.Key] || it.Count-it.Err > truth[it.Key] {
			t.Errorf("%s: count %d err %d, true %d", it.Key, it.Count, it.Err, truth[it.Key])
		}
	}
	for _, k := range []string{"heavy.test", "medium.test"} {
		if _, ok := keys[k]; !ok {
			t.Errorf("%s (%d of %d) lost from the sketch: %v", k, truth[k], 10000, s.items)
		}
	}
}

// TestHourTop: the top of the last hour merges the ten-minute sketches,
// ranks by count, and forgets segments older than an hour.
func TestHourTop(t *testing.T) {
	clk := newFakeClock()
	h := newHourTop(4, clk.now)
	for range 3 {
		h.add("a.test")
	}
	h.add("b.test")
	clk.advance(20 * time.Minute)
	h.add("b.test")
	h.add("b.test")
	h.add("b.test")
	h.add("c.test")
	got := h.top(10)
	want := []topCount{{Key: "b.test", Count: 4}, {Key: "a.test", Count: 3}, {Key: "c.test", Count: 1}}
	if !slices.Equal(got, want) {
		t.Fatalf("top = %v, want %v", got, want)
	}
	if got := h.top(1); len(got) != 1 || got[0].Key != "b.test" {
		t.Fatalf("top(1) = %v", got)
	}
	// 50 minutes on, the first segment (a.test, one b.test) is gone.
	clk.advance(50 * time.Minute)
	want = []topCount{{Key: "b.test", Count: 3}, {Key: "c.test", Count: 1}}
	if got := h.top(10); !slices.Equal(got, want) {
		t.Fatalf("70 minutes on: top = %v, want %v", got, want)
	}
	clk.advance(time.Hour)
	if got := h.top(10); len(got) != 0 {
		t.Fatalf("two hours on: top = %v, want empty", got)
	}
	// Memory stays bounded: a flood of distinct hosts keeps at most
	// k keys per segment.
	for i := range 5000 {
		h.add(fmt.Sprintf("h%d.test", i))
		if i%500 == 0 {
			clk.advance(10 * time.Minute)
		}
	}
	h.mu.Lock()
	for _, s := range h.seg {
		if s.ss != nil && len(s.ss.items) > 4 {
			t.Errorf("segment holds %d keys, want at most 4", len(s.ss.items))
		}
	}
	h.mu.Unlock()
	if got := h.top(100); len(got) > 4*hourSegments {
		t.Errorf("top of a flood has %d keys, more than the sketches hold", len(got))
	}
}

// TestConnTrackOnce: the end of a counted connection is counted exactly
// once, whether it closes before, during or after track, and whichever
// goroutine closes it.
func TestConnTrackOnce(t *testing.T) {
	for i := range 200 {
		c := &conn{t: newConns(slog.New(slog.DiscardHandler)), Conn: nopConn{}}
		var ends int
		var mu sync.Mutex
		done := func() { mu.Lock(); ends++; mu.Unlock() }
		var wg sync.WaitGroup
		if i%3 == 0 {
			c.Close()
		}
		wg.Go(func() { c.Close() })
		// Another conn tracks with the same func, as the connections of
		// one front end do (metrics.opened).
		other := &conn{t: c.t, Conn: nopConn{}}
		wg.Go(func() { c.track(&done) })
		wg.Go(func() { other.track(&done) })
		wg.Wait()
		c.Close()
		if ends != 1 {
			t.Fatalf("round %d: the end counted %d times", i, ends)
		}
		other.Close()
		other.Close()
		if ends != 2 {
			t.Fatalf("round %d: two conns' ends counted %d times", i, ends)
		}
	}
}

// nopConn is a connection whose Close does nothing: track and Close are
// about bookkeeping, not sockets.
type nopConn struct{ net.Conn }

func (nopConn) Close() error { return nil }

// BenchmarkObserve is the cost the metrics add to each request: the
// counters, the per-minute ring and, for a block, the two sketches.
func BenchmarkObserve(b *testing.B) {
	s := &Server{}
	m := newMetrics(s, time.Now)
	for _, tc := range []struct {
		name string
		a    observe.Access
	}{
		{"allow", observe.Access{Frontend: observe.HTTP, Verdict: observe.Allow, Host: "ok.test", Up: 100, Down: 1000}},
		{"block", observe.Access{Frontend: observe.HTTP, Verdict: observe.Block, Category: "games", Host: "games.test"}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					m.observe(tc.a)
				}
			})
		})
	}
}
