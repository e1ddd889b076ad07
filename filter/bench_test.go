package filter_test

import (
	"math/rand/v2"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice/filter"
	"github.com/sluiceproxy/sluice/filter/filtertest"
	"github.com/sluiceproxy/sluice/rules"
)

// benchSet caches the synthetic sets: generating 2M names takes a while.
var benchSets = map[filtertest.Options]*rules.Set{}

func benchSet(o filtertest.Options) *rules.Set {
	if s, ok := benchSets[o]; ok {
		return s
	}
	s := filtertest.Set(o)
	benchSets[o] = s
	return s
}

var (
	opts100k = filtertest.Options{Seed: 1, Domains: 100_000, Categories: 20, Globs: 1_000}
	opts2M   = filtertest.Options{Seed: 2, Domains: 2_000_000, Categories: 50, Globs: 10_000}
)

// benchDecide runs Decide over a fixed mix of hosts and reports, beside
// the mean, the median and 99th percentile of single decisions timed one by
// one (less the cost of reading the clock twice, so approximate).
//
// With hot, the requests are not the uniform mix but a skewed one: hosts
// drawn from the same mix with a Zipf distribution (s = 1.1), as real
// traffic goes mostly to a few popular hosts. Its figures are reported by
// their own benchmarks, not in place of the uniform ones.
func benchDecide(b *testing.B, o filtertest.Options, hot bool) {
	set := benchSet(o)
	hosts := filtertest.Hosts(set, 1<<16, 7)
	benchDecideHosts(b, set, hosts, hot)
}

// benchDecideHosts is benchDecide with the hosts given (a power of two in
// number): they are decided in order, or drawn with Zipf when hot.
func benchDecideHosts(b *testing.B, set *rules.Set, hosts []string, hot bool) {
	e, err := filter.Compile(set)
	if err != nil {
		b.Fatal(err)
	}
	if hot {
		z := rand.NewZipf(rand.New(rand.NewPCG(8, 9)), 1.1, 1, uint64(len(hosts)-1))
		skewed := make([]string, len(hosts))
		for i := range skewed {
			skewed[i] = hosts[z.Uint64()]
		}
		hosts = skewed
	}
	hosts = packed(hosts)
	reqs := make([]filter.Request, len(hosts))
	for i, h := range hosts {
		reqs[i] = filter.Request{Client: netip.MustParseAddr("192.0.2.1"), Host: h, Port: 443,
			Time: time.Date(2026, 3, 4, 10, 0, 0, 0, time.UTC)}
	}
	blocked := 0
	for _, r := range reqs {
		if e.Decide(r).Verdict == filter.Block {
			blocked++
		}
	}
	b.ReportAllocs()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cpu0 := threadCPU()
	b.ResetTimer()
	n := 0
	for i := 0; b.Loop(); i++ {
		e.Decide(reqs[i&(len(reqs)-1)])
		n++
	}
	b.StopTimer()
	b.ReportMetric(float64(threadCPU()-cpu0)/float64(n), "cpu-ns/op")
	p50, p99 := latencies(e, reqs)
	b.ReportMetric(p50, "p50-ns")
	b.ReportMetric(p99, "p99-ns")
	b.ReportMetric(float64(blocked)/float64(len(reqs))*100, "%blocked")
}

// packed returns hosts with their bytes copied, in order, into one string,
// so that walking them in order reads memory sequentially, as a proxy
// deciding on a host it has just parsed has it in cache; scattered strings
// would add a cache miss per decision that no real caller pays.
func packed(hosts []string) []string {
	var b strings.Builder
	for _, h := range hosts {
		b.WriteString(h)
	}
	all := b.String()
	out := make([]string, len(hosts))
	off := 0
	for i, h := range hosts {
		out[i] = all[off : off+len(h)]
		off += len(h)
	}
	return out
}

// threadCPU returns the CPU time the calling OS thread has used, so that
// a benchmark can report its cost apart from the time other processes on
// a busy machine take from it. It returns 0 where getrusage fails.
func threadCPU() time.Duration {
	const rusageThread = 1 // RUSAGE_THREAD, Linux
	var ru syscall.Rusage
	if err := syscall.Getrusage(rusageThread, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// latencies times each decision of reqs on its own and returns the median
// and 99th percentile in nanoseconds, less the clock's own cost.
func latencies(e *filter.Engine, reqs []filter.Request) (p50, p99 float64) {
	clock := make([]time.Duration, 1000)
	for i := range clock {
		t := time.Now()
		clock[i] = time.Since(t)
	}
	slices.Sort(clock)
	overhead := clock[len(clock)/2]
	d := make([]time.Duration, len(reqs))
	for i, r := range reqs {
		t := time.Now()
		e.Decide(r)
		d[i] = time.Since(t) - overhead
	}
	slices.Sort(d)
	return float64(d[len(d)/2]), float64(d[len(d)*99/100])
}

// BenchmarkDecide100k decides with 100,000 category domains and 1,000 globs.
func BenchmarkDecide100k(b *testing.B) { benchDecide(b, opts100k, false) }

// BenchmarkDecide2M decides with 2,000,000 domains in 50 categories and 10,000 globs.
func BenchmarkDecide2M(b *testing.B) {
	if testing.Short() {
		b.Skip("2M domains: skipped in -short mode")
	}
	benchDecide(b, opts2M, false)
}

// BenchmarkDecide2MHot is BenchmarkDecide2M with a skewed (Zipf) choice of
// hosts, a realistic hot set: reported apart from the uniform mix.
func BenchmarkDecide2MHot(b *testing.B) {
	if testing.Short() {
		b.Skip("2M domains: skipped in -short mode")
	}
	benchDecide(b, opts2M, true)
}

// BenchmarkDecide2MGateway is BenchmarkDecide2M with the "gateway mix" of
// hosts (filtertest.GatewayHosts): about 5% listed domains or glob hits,
// the rest names in no list, as a real gateway mostly allows. Reported
// beside the uniform mix, not in place of it.
func BenchmarkDecide2MGateway(b *testing.B) {
	if testing.Short() {
		b.Skip("2M domains: skipped in -short mode")
	}
	set := benchSet(opts2M)
	benchDecideHosts(b, set, filtertest.GatewayHosts(set, 1<<16, 7), false)
}

// BenchmarkDecide2MParallel is BenchmarkDecide2M on every CPU.
func BenchmarkDecide2MParallel(b *testing.B) {
	if testing.Short() {
		b.Skip("2M domains: skipped in -short mode")
	}
	set := benchSet(opts2M)
	e, err := filter.Compile(set)
	if err != nil {
		b.Fatal(err)
	}
	hosts := packed(filtertest.Hosts(set, 1<<16, 7))
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for i := 0; pb.Next(); i++ {
			e.Decide(filter.Request{Host: hosts[i&(len(hosts)-1)], Port: 443})
		}
	})
}

// BenchmarkCompile2M compiles 2,000,000 domains in 50 categories and
// 10,000 globs, and reports the engine's heap per category domain.
func BenchmarkCompile2M(b *testing.B) {
	if testing.Short() {
		b.Skip("2M domains: skipped in -short mode")
	}
	benchCompile(b, opts2M)
}

// BenchmarkCompile100k is BenchmarkCompile2M with 100,000 domains and 1,000 globs.
func BenchmarkCompile100k(b *testing.B) { benchCompile(b, opts100k) }

func benchCompile(b *testing.B, o filtertest.Options) {
	set := benchSet(o)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := filter.Compile(set); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(heapPerDomain(b, set, o.Domains), "B/domain")
}

// heapPerDomain returns the live heap an engine compiled from set holds,
// divided by the number of category domains.
func heapPerDomain(tb testing.TB, set *rules.Set, domains int) float64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	e, err := filter.Compile(set)
	if err != nil {
		tb.Fatal(err)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(e)
	runtime.KeepAlive(set) // the caller's set is not the engine's cost
	return float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / float64(domains)
}

// BenchmarkDecide100kReport is BenchmarkDecide100k's mix with the first
// rule made report-only: every allowed request is decided a second time,
// by the engine with the report-only rule enforcing.
func BenchmarkDecide100kReport(b *testing.B) {
	set := benchSet(opts100k)
	cfg := *set.Config
	cfg.Rules = slices.Clone(cfg.Rules)
	for i := range cfg.Rules {
		if cfg.Rules[i].Action == rules.Block {
			cfg.Rules[i].Report = true
			break
		}
	}
	rs := *set
	rs.Config = &cfg
	benchDecideHosts(b, &rs, filtertest.Hosts(set, 1<<16, 7), false)
}
