package test

import (
	"bufio"
	"net"
	"sync/atomic"
	"testing"
)

func newBufReader(c net.Conn) *bufio.Reader { return bufio.NewReader(c) }

// udpPeer listens for UDP datagrams at addr until the test ends, counts
// them, and answers each with answer(datagram) when answer is not nil. It
// returns the port it listens on and the count.
func udpPeer(t *testing.T, addr string, answer func([]byte) []byte) (int, *atomic.Int64) {
	t.Helper()
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	got := new(atomic.Int64)
	go func() {
		buf := make([]byte, 2048)
		for {
			n, a, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			got.Add(1)
			if answer != nil {
				pc.WriteTo(answer(buf[:n]), a)
			}
		}
	}()
	return pc.LocalAddr().(*net.UDPAddr).Port, got
}
