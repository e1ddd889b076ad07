package filter_test

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice/filter"
	"github.com/sluiceproxy/sluice/filter/filtertest"
)

// BenchmarkDecide2MClasses is BenchmarkDecide2M's uniform mix, its single
// decisions timed one by one in order, and the median reported for each
// kind of host apart, the clock's own cost included (so higher than
// benchDecide's p50, which subtracts it): listed in a category (the
// category index is read), a name a glob matches, an IP literal, and a
// name in no list. The median of the whole mix is one of theirs: this
// says which, and what each costs.
func BenchmarkDecide2MClasses(b *testing.B) {
	if testing.Short() {
		b.Skip("2M domains: skipped in -short mode")
	}
	set := benchSet(opts2M)
	e, err := filter.Compile(set)
	if err != nil {
		b.Fatal(err)
	}
	hosts := packed(filtertest.Hosts(set, 1<<16, 7))
	reqs := make([]filter.Request, len(hosts))
	class := make([]int, len(hosts))
	for i, h := range hosts {
		reqs[i] = filter.Request{Client: netip.MustParseAddr("192.0.2.1"), Host: h, Port: 443,
			Time: time.Date(2026, 3, 4, 10, 0, 0, 0, time.UTC)}
		d := e.Decide(reqs[i])
		_, ipErr := netip.ParseAddr(h)
		switch {
		case ipErr == nil:
			class[i] = 2
		case d.Category != "":
			class[i] = 0
		case strings.ContainsAny(d.Rule.Pattern, "*?"):
			class[i] = 1
		default:
			class[i] = 3
		}
	}
	names := []string{"listed", "glob", "ip", "none"}
	var per [4][]time.Duration
	for b.Loop() {
		for i, r := range reqs {
			t := time.Now()
			e.Decide(r)
			per[class[i]] = append(per[class[i]], time.Since(t))
		}
	}
	for c, d := range per {
		if len(d) == 0 {
			continue
		}
		slices.Sort(d)
		b.ReportMetric(float64(d[len(d)/2]), names[c]+"-p50-ns")
		b.ReportMetric(float64(len(d))/float64(b.N*len(reqs))*100, names[c]+"-%")
	}
}
