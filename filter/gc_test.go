package filter_test

import (
	"runtime"
	"runtime/metrics"
	"testing"

	"github.com/sluiceproxy/sluice/filter"
	"github.com/sluiceproxy/sluice/filter/filtertest"
	"github.com/sluiceproxy/sluice/rules"
)

// scannable returns the live heap and the part of it the garbage collector
// must scan for pointers, after a collection.
func scannable() (heap, scan uint64) {
	runtime.GC()
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}, {Name: "/gc/scan/heap:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64(), s[1].Value.Uint64()
}

// TestEngineIsNotScanned checks that the bulk of a large engine is
// pointer-free, so that the collector of the process holding it (the
// proxy) marks it without scanning it: its tables of category domains are
// words and Bloom blocks; only the rules and their patterns hold pointers.
// A table of strings or of pointers per domain would fail it.
func TestEngineIsNotScanned(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles 200,000 domains")
	}
	const n = 200_000
	set := filtertest.Set(filtertest.Options{Seed: 6, Domains: n, Categories: 50, Globs: 100})
	heap0, scan0 := scannable()
	e, err := filter.Compile(set)
	if err != nil {
		t.Fatal(err)
	}
	heap1, scan1 := scannable()
	runtime.KeepAlive(e)
	runtime.KeepAlive(set)
	perDomain := float64(int64(scan1)-int64(scan0)) / n
	t.Logf("engine: %.1f bytes of heap per domain, of which %.2f scannable", float64(int64(heap1)-int64(heap0))/n, perDomain)
	if perDomain > 0.5 {
		t.Errorf("the engine adds %.2f scannable bytes per category domain, want at most 0.5: its tables must hold no pointers", perDomain)
	}
}

// BenchmarkGCWithEngine allocates as a busy proxy does (short-lived
// objects with pointers, a ring of them live) with no engine and with a
// 2,000,000-domain engine live, and reports the collections per million
// operations: the engine must not slow the allocating code down, which it
// would if the collector had to scan it.
func BenchmarkGCWithEngine(b *testing.B) {
	type conn struct {
		buf  []byte
		name *string
		next *conn
	}
	// run compiles the set that mk returns, if any, and drops the set:
	// what stays live is the engine, as in the proxy.
	run := func(b *testing.B, mk func() *rules.Set) {
		var e *filter.Engine
		if mk != nil {
			var err error
			if e, err = filter.Compile(mk()); err != nil {
				b.Fatal(err)
			}
		}
		ring := make([]*conn, 4096)
		runtime.GC()
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; b.Loop(); i++ {
			s := "host"
			c := &conn{buf: make([]byte, 512), name: &s}
			c.next = ring[(i+1)&(len(ring)-1)]
			if c.next != nil {
				c.next.next = nil // keep the chains short
			}
			ring[i&(len(ring)-1)] = c
		}
		b.StopTimer()
		runtime.ReadMemStats(&m1)
		b.ReportMetric(float64(m1.NumGC-m0.NumGC)/float64(b.N)*1e6, "GCs/Mop")
		b.ReportMetric(float64(m1.PauseTotalNs-m0.PauseTotalNs)/float64(b.N), "pause-ns/op")
		runtime.KeepAlive(e)
	}
	b.Run("none", func(b *testing.B) { run(b, nil) })
	b.Run("2M", func(b *testing.B) {
		if testing.Short() {
			b.Skip("2M domains: skipped in -short mode")
		}
		run(b, func() *rules.Set { return filtertest.Set(opts2M) })
	})
}
