package relay

import (
	"context"
	"io"
	"testing"
)

// BenchmarkSplice streams data one way through Splice between two loopback
// TCP connections, the path every CONNECT and SOCKS tunnel takes; on Linux
// the copy is splice(2), so the bytes never enter Sluice's memory.
func BenchmarkSplice(b *testing.B) {
	f := start(b, context.Background(), 0, nil)
	chunk := make([]byte, 256<<10)
	b.SetBytes(int64(len(chunk)))
	done := make(chan int64)
	go func() {
		n, _ := io.Copy(io.Discard, f.server)
		done <- n
	}()
	b.ResetTimer()
	for b.Loop() {
		if _, err := f.user.Write(chunk); err != nil {
			b.Fatal(err)
		}
	}
	f.user.CloseWrite()
	n := <-done
	b.StopTimer()
	f.server.Close()
	f.user.Close()
	f.wait(b)
	if n != int64(b.N)*int64(len(chunk)) {
		b.Fatalf("received %d bytes, sent %d", n, int64(b.N)*int64(len(chunk)))
	}
}
