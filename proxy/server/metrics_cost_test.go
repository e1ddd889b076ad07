package server

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/sluiceproxy/sluice/proxy/observe"
)

// value reads a counter's or gauge's value.
func value(t *testing.T, m prometheus.Metric) float64 {
	t.Helper()
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		t.Fatal(err)
	}
	if d.Counter != nil {
		return d.Counter.GetValue()
	}
	return d.Gauge.GetValue()
}

// TestMetricsPerConnectionCost: counting a connection open and closed,
// and a request of a label set seen before, allocates nothing, and the
// counts are right.
func TestMetricsPerConnectionCost(t *testing.T) {
	m := newMetrics(&Server{}, time.Now)
	ct := newConns(quietLogger())
	a := observe.Access{Frontend: observe.SOCKS5, Verdict: observe.Allow, Category: "news"}
	m.observe(a) // resolves the label set once
	const runs = 100
	conns := make([]conn, runs+1) // AllocsPerRun warms up once
	i := 0
	allocs := testing.AllocsPerRun(runs, func() {
		c := &conns[i]
		i++
		c.t, c.Conn = ct, nopConn{}
		c.track(m.opened(observe.SOCKS5))
		m.observe(a)
		c.Close()
	})
	if allocs > 0 {
		t.Errorf("%.1f allocations per connection, want 0", allocs)
	}
	if n := value(t, m.connsTotal.WithLabelValues(observe.SOCKS5)); n != runs+1 { // AllocsPerRun warms up once
		t.Errorf("connections total %v, want %d", n, runs+1)
	}
	if n := value(t, m.connsActive.WithLabelValues(observe.SOCKS5)); n != 0 {
		t.Errorf("connections active %v, want 0", n)
	}
	if n := value(t, m.requests.WithLabelValues(observe.SOCKS5, observe.Allow, "news")); n != runs+2 {
		t.Errorf("requests %v, want %d", n, runs+2)
	}
	// A label set beyond those kept is still counted.
	for i := range maxRequestKeys + 10 {
		m.request(observe.HTTP, observe.Block, "c"+string(rune('a'+i%26))+string(rune(i))).Inc()
	}
	if n := len(*m.reqs.Load()); n > maxRequestKeys {
		t.Errorf("%d label sets kept, want at most %d", n, maxRequestKeys)
	}
}
