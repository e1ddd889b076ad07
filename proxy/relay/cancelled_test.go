package relay

import (
	"context"
	"testing"
	"time"
)

// TestStartCancelledContext: a tunnel started with a context that has
// already ended (the client's request was cancelled as the tunnel was
// handed off) is cut at once and reports it; under -race, the cut that
// the context's AfterFunc runs at once must not race with the splicer
// being set up (it read the directions' state while newSplicer wrote it;
// seen in proxy's TestAccessLog).
func TestStartCancelledContext(t *testing.T) {
	for range 20 {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, client := tcpPair(t)
		origin, _ := tcpPair(t)
		done := make(chan error, 1)
		Start(ctx, client, origin, time.Minute, func(_ Stats, err error) { done <- err })
		select {
		case err := <-done:
			if err == nil {
				t.Fatal("a tunnel whose context had ended finished without an error")
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a tunnel whose context had ended was not cut")
		}
	}
}
