package relay

import (
	"testing"
	"time"
)

// BenchmarkParkSweep: one sweep of the parked directions of 4,000 idle
// tunnels (8,000 directions; 16,000 fds in the test process).
func BenchmarkParkSweep(b *testing.B) {
	const tunnels = 4000
	var tus []*tunnel
	for range tunnels {
		tu := &tunnel{done: make(chan result, 2)}
		tu.user, tu.client = tcpPair(b)
		tu.origin, tu.server = tcpPair(b)
		Start(b.Context(), tu.client, tu.origin, time.Minute, func(st Stats, err error) { tu.done <- result{st, err} })
		tus = append(tus, tu)
	}
	for deadline := time.Now().Add(30 * time.Second); parked() < 2*tunnels; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatalf("%d parked", parked())
		}
	}
	p := getParker()
	for b.Loop() {
		p.sweep()
	}
	b.StopTimer()
	for _, tu := range tus {
		tu.user.Close()
		tu.server.Close()
		<-tu.done
	}
}
