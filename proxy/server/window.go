package server

import (
	"cmp"
	"slices"
	"sync"
	"time"
)

// The status page's view of the last hour, in bounded memory whatever the
// traffic: requests and blocks per minute (minuteRing) and the most
// blocked categories and hosts (hourTop, a Space-Saving sketch per ten
// minutes).

// ringMinutes is how many per-minute buckets the chart shows.
const ringMinutes = 60

// minuteRing counts requests and blocks per minute over the last hour: a
// ring of 60 buckets, each tagged with the minute it counts, so that a
// bucket from more than an hour ago reads as zero.
type minuteRing struct {
	now func() time.Time

	mu     sync.Mutex
	minute [ringMinutes]int64 // Unix minute each bucket counts; 0: never used
	req    [ringMinutes]int64
	blk    [ringMinutes]int64
}

func newMinuteRing(now func() time.Time) *minuteRing { return &minuteRing{now: now} }

// add counts one request, and one block when blocked.
func (r *minuteRing) add(blocked bool) {
	m := r.now().Unix() / 60
	i := m % ringMinutes
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.minute[i] != m {
		r.minute[i], r.req[i], r.blk[i] = m, 0, 0
	}
	r.req[i]++
	if blocked {
		r.blk[i]++
	}
}

// series returns the counts of the last 60 minutes, oldest first: the last
// element is the current minute.
func (r *minuteRing) series() (req, blk [ringMinutes]int64) {
	cur := r.now().Unix() / 60
	r.mu.Lock()
	defer r.mu.Unlock()
	for k := range ringMinutes {
		m := cur - int64(ringMinutes-1-k)
		i := m % ringMinutes
		if m >= 0 && r.minute[i] == m {
			req[k], blk[k] = r.req[i], r.blk[i]
		}
	}
	return req, blk
}

// topCount is one key of a top-k and its (over-)estimated count. The true
// count lies between Count-Err and Count.
type topCount struct {
	Key   string
	Count int64
	Err   int64
}

// spaceSaving is the Space-Saving sketch (Metwally, Agrawal, El Abbadi
// 2005): it keeps at most k keys; a new key when full replaces the one
// with the smallest count and inherits that count as its error. Any key
// seen more than n/k times of n is kept. Not safe for concurrent use.
type spaceSaving struct {
	k     int
	items []topCount
	index map[string]int // key -> position in items; at most k entries
}

func newSpaceSaving(k int) *spaceSaving {
	return &spaceSaving{k: k, items: make([]topCount, 0, k), index: make(map[string]int, k)}
}

func (s *spaceSaving) add(key string) {
	if i, ok := s.index[key]; ok {
		s.items[i].Count++
		return
	}
	if len(s.items) < s.k {
		s.index[key] = len(s.items)
		s.items = append(s.items, topCount{Key: key, Count: 1})
		return
	}
	low := 0
	for i, it := range s.items {
		if it.Count < s.items[low].Count {
			low = i
		}
	}
	old := s.items[low]
	delete(s.index, old.Key)
	s.index[key] = low
	s.items[low] = topCount{Key: key, Count: old.Count + 1, Err: old.Count}
}

// hourSegments is how many sketches cover the hour; a key counts for the
// hour while its segment is among the last hourSegments.
const hourSegments = 6

// hourTop keeps the most frequent keys of the last hour: one Space-Saving
// sketch of k keys per ten minutes, six of them, merged when read. Memory
// is bounded by 6k keys; the window slides by ten minutes.
type hourTop struct {
	now func() time.Time
	k   int

	mu  sync.Mutex
	seg [hourSegments]struct {
		id int64 // Unix time / 600 of the segment; 0: never used
		ss *spaceSaving
	}
}

func newHourTop(k int, now func() time.Time) *hourTop { return &hourTop{k: k, now: now} }

const segmentSeconds = 3600 / hourSegments

func (h *hourTop) add(key string) {
	id := h.now().Unix() / segmentSeconds
	i := id % hourSegments
	h.mu.Lock()
	defer h.mu.Unlock()
	s := &h.seg[i]
	if s.id != id || s.ss == nil {
		s.id, s.ss = id, newSpaceSaving(h.k)
	}
	s.ss.add(key)
}

// top returns up to n keys of the last hour, most frequent first (ties by
// key), with their summed counts and error bounds.
func (h *hourTop) top(n int) []topCount {
	cur := h.now().Unix() / segmentSeconds
	sum := map[string]topCount{}
	h.mu.Lock()
	for _, s := range h.seg {
		if s.ss == nil || s.id <= cur-hourSegments || s.id > cur {
			continue
		}
		for _, it := range s.ss.items {
			t := sum[it.Key]
			t.Key, t.Count, t.Err = it.Key, t.Count+it.Count, t.Err+it.Err
			sum[it.Key] = t
		}
	}
	h.mu.Unlock()
	out := make([]topCount, 0, len(sum))
	for _, t := range sum {
		out = append(out, t)
	}
	slices.SortFunc(out, func(a, b topCount) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.Key, b.Key))
	})
	return out[:min(n, len(out))]
}
