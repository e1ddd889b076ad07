package relay

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestWatchSharedContext: tunnels sharing one context (a server's base
// context) are all cut when it ends, those that ended before are not
// touched, one started after it ended is cut at once, and the relay keeps
// nothing of the context once no tunnel watches it.
func TestWatchSharedContext(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	const n = 40
	type tun struct {
		f    *fixture
		done chan error
	}
	tuns := make([]tun, n)
	for i := range tuns {
		f := &fixture{}
		f.user, f.client = tcpPair(t)
		f.origin, f.server = tcpPair(t)
		done := make(chan error, 1)
		Start(ctx, f.client, f.origin, 0, func(_ Stats, err error) { done <- err })
		tuns[i] = tun{f, done}
	}
	wait := func(i int) error {
		select {
		case err := <-tuns[i].done:
			return err
		case <-time.After(10 * time.Second):
			t.Fatalf("tunnel %d did not end", i)
			return nil
		}
	}
	for i := 0; i < n; i += 2 { // every other one ends cleanly first
		tuns[i].f.user.CloseWrite()
		tuns[i].f.server.CloseWrite()
		if err := wait(i); err != nil {
			t.Fatalf("tunnel %d: %v", i, err)
		}
	}
	cancel()
	for i := 1; i < n; i += 2 {
		if err := wait(i); !errors.Is(err, context.Canceled) {
			t.Fatalf("tunnel %d: err %v, want context.Canceled", i, err)
		}
	}
	_, client := tcpPair(t)
	origin, _ := tcpPair(t)
	late := make(chan error, 1)
	Start(ctx, client, origin, 0, func(_ Stats, err error) { late <- err })
	select {
	case err := <-late:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("late tunnel: err %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a tunnel started on an ended context was not cut")
	}
	// A context that ended is forgotten, and so is, past keepGroups, one
	// whose tunnels all ended.
	for range 2 * keepGroups {
		ctx2, cancel2 := context.WithCancel(t.Context())
		defer cancel2()
		f := start(t, ctx2, 0, nil)
		f.user.CloseWrite()
		f.server.CloseWrite()
		if r := f.wait(t); r.err != nil {
			t.Fatal(r.err)
		}
	}
	watching.mu.Lock()
	_, kept := watching.groups[ctx]
	groups := len(watching.groups)
	watching.mu.Unlock()
	if kept || groups > keepGroups+1 {
		t.Errorf("the relay watches %d contexts (the ended one: %v), want at most %d", groups, kept, keepGroups+1)
	}
}

// valueCtx is a context that is a value, not a pointer, and holds a slice:
// it cannot be a map key.
type valueCtx struct {
	context.Context
	tags []string
}

// TestWatchValueContext: a tunnel on a context that cannot be a map key
// does not panic and is still cut when the context ends.
func TestWatchValueContext(t *testing.T) {
	parent, cancel := context.WithCancel(t.Context())
	f := start(t, valueCtx{parent, []string{"a"}}, 0, nil)
	cancel()
	if r := f.wait(t); !errors.Is(r.err, context.Canceled) {
		t.Fatalf("err %v, want context.Canceled", r.err)
	}
}
