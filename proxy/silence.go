package proxy

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"
)

// errOriginSilent ends a plain request whose origin sent nothing for the
// idle timeout: before the answer's head the client gets a 504, within its
// body a cut (never a complete-looking answer).
var errOriginSilent = fmt.Errorf("proxy: nothing moved to or from the origin for the idle timeout: %w", context.DeadlineExceeded)

// silence cancels a plain request's context when nothing moves for idle:
// no byte of the request body to the origin, no answer head, no byte of
// the answer body. It is timeouts.idle applied to a plain request as to a
// tunnel (Squid's read_timeout): without it, an origin that accepts and
// never answers holds the handler, its client and two fds for ever.
// Progress pushes the deadline on at most once per idle/16, so a fast
// body costs no timer reset per read.
type silence struct {
	ctx    context.Context
	idle   time.Duration
	cancel context.CancelCauseFunc
	timer  *time.Timer
	armed  atomic.Int64 // unix nanoseconds of the last reset
}

// watchOrigin returns ctx with the watch on; stop must be called when the
// exchange ends.
func watchOrigin(ctx context.Context, idle time.Duration) (context.Context, *silence) {
	ctx, cancel := context.WithCancelCause(ctx)
	w := &silence{ctx: ctx, idle: idle, cancel: cancel}
	w.armed.Store(time.Now().UnixNano())
	w.timer = time.AfterFunc(idle, func() { cancel(errOriginSilent) })
	return ctx, w
}

// progress says that bytes moved. Safe for concurrent use (the transport
// reads the request body on its own goroutine). A nil w does nothing.
func (w *silence) progress() {
	if w == nil {
		return
	}
	now := time.Now().UnixNano()
	if last := w.armed.Load(); now-last > int64(w.idle/16) && w.armed.CompareAndSwap(last, now) {
		w.timer.Reset(w.idle)
	}
}

// stop ends the watch.
func (w *silence) stop() {
	w.timer.Stop()
	w.cancel(nil)
}

// cause returns errOriginSilent when the watch fired, else err. A nil w
// returns err.
func (w *silence) cause(err error) error {
	if w != nil && context.Cause(w.ctx) == errOriginSilent {
		return errOriginSilent
	}
	return err
}
