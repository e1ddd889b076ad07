package proxy

import (
	"context"
	"net/http/httptest"
	"testing"
	"time"
)

// TestDetach: a request's context outlives net/http's (cancelled by the
// client's FIN) and ends with the base or the handler; one served on the
// worker, whose context is the base's own, ends the same ways.
func TestDetach(t *testing.T) {
	var s Server
	for _, worker := range []bool{false, true} {
		base, stopBase := context.WithCancel(context.Background())
		ctx := WithBase(base)
		var fin context.CancelFunc
		if !worker { // net/http's request context: a child it cancels on FIN
			ctx, fin = context.WithCancel(ctx)
		}
		r := httptest.NewRequest("GET", "http://x/", nil).WithContext(ctx)
		d, cancel := s.detach(r)
		if fin != nil {
			fin()
		}
		if d.Err() != nil {
			t.Fatalf("worker %v: detached context ended with the request's: %v", worker, d.Err())
		}
		stopBase()
		select {
		case <-d.Done():
		case <-time.After(10 * time.Second):
			t.Fatalf("worker %v: detached context outlived the base", worker)
		}
		cancel()
		d, cancel = s.detach(httptest.NewRequest("GET", "http://x/", nil).WithContext(WithBase(context.Background())))
		cancel()
		if d.Err() == nil {
			t.Fatalf("worker %v: cancel did not end the context", worker)
		}
	}
}
