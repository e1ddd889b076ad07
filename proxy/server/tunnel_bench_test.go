package server

import (
	"io"
	"testing"
)

// BenchmarkTunnel is one tunnel through Run's server to a loopback echo
// origin, as the load harness's connect and socks loads open them:
// handshake, decision, dial, one echoed line, close. Allocations per op
// include the client's and the echo origin's.
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
			b.ReportAllocs()
			for b.Loop() {
				c := open(b, r.addr, origin)
				c.Write([]byte("ping\n"))
				if _, err := io.ReadFull(c, buf[:]); err != nil {
					b.Fatal(err)
				}
				c.Close()
			}
		})
	}
}
