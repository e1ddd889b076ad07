package server

import (
	"io"
	rtmetrics "runtime/metrics"
	"testing"
)

// BenchmarkTunnel is one tunnel through Run's server to a loopback echo
// origin, as the load harness's connect and socks loads open them:
// handshake, decision, dial, one echoed line, close. Allocations per op
// include the client's and the echo origin's; goroutines/op, the
// goroutines started per tunnel, includes the echo origin's one.
func BenchmarkTunnel(b *testing.B) {
	origin := echoOrigin(b)
	r := startRun(b, "sniff: off\n")
	for _, kind := range []string{"socks5", "connect"} {
		b.Run(kind, func(b *testing.B) {
			open := socks5Tunnel
			if kind == "connect" {
				open = connectTunnel
			}
			var buf [5]byte
			created := []rtmetrics.Sample{{Name: "/sched/goroutines-created:goroutines"}}
			rtmetrics.Read(created)
			before := created[0].Value.Uint64()
			b.ReportAllocs()
			for b.Loop() {
				c := open(b, r.addr, origin)
				c.Write([]byte("ping\n"))
				if _, err := io.ReadFull(c, buf[:]); err != nil {
					b.Fatal(err)
				}
				c.Close()
			}
			rtmetrics.Read(created)
			b.ReportMetric(float64(created[0].Value.Uint64()-before)/float64(b.N), "goroutines/op")
		})
	}
}
