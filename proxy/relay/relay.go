// Package relay splices two connections together: it copies both ways,
// propagates half-close with CloseWrite, closes idle tunnels and counts bytes.
// Between two *net.TCPConn on Linux the copy takes the kernel splice path.
package relay

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

var (
	// ErrIdle means no byte moved either way for the idle timeout.
	ErrIdle = errors.New("relay: idle timeout")
)

// Stats counts the bytes a splice moved.
type Stats struct {
	// Up is the number of bytes copied from the client to the origin,
	// including bytes the client had sent before the splice began.
	Up int64
	// Down is the number of bytes copied from the origin to the client.
	Down int64
}

// chunk bounds one io.CopyN call. Between two *net.TCPConn each call is a
// splice(2) loop in the kernel; between calls the copy extends its read
// deadline and records progress for the idle timeout. A consumer that takes
// less than chunk bytes in twice the idle timeout is treated as idle.
const chunk = 256 << 10

// maxUnwrap bounds the unwrapping of nested transparent conns.
const maxUnwrap = 16

// Unwrapper is implemented by transparent connection wrappers: conns whose
// reads first yield some pending bytes and then read the inner conn
// unchanged (such as a listener that peeked at the first byte). Unwrap
// returns the inner conn and the bytes still pending.
type Unwrapper interface {
	Unwrap() (net.Conn, []byte)
}

// Unwrap strips transparent wrappers from c: the conns returned by
// WithPrefix and any conn implementing Unwrapper, however deeply nested. It
// returns the innermost conn and the bytes that a reader of c would see
// before reading it, in order. Other wrappers (such as *tls.Conn) are
// returned as they are.
func Unwrap(c net.Conn) (raw net.Conn, pending []byte) {
	for range maxUnwrap {
		u, ok := c.(Unwrapper)
		if !ok {
			break
		}
		inner, p := u.Unwrap()
		if inner == nil {
			break
		}
		pending = append(pending, p...)
		c = inner
	}
	return c, pending
}

// WithPrefix returns a conn whose reads first yield prefix and then read
// from c: for bytes already read from c into a buffer by a handshake.
// Writes, Close and deadlines go to c. Splice unwraps it (see Unwrap), so
// the raw conn underneath is still spliced by the kernel. WithPrefix
// keeps a reference to prefix; the caller must not modify it afterwards.
func WithPrefix(c net.Conn, prefix []byte) net.Conn {
	if len(prefix) == 0 {
		return c
	}
	return &prefixConn{Conn: c, prefix: prefix}
}

// prefixConn is the conn returned by WithPrefix.
type prefixConn struct {
	net.Conn
	prefix []byte // still to be read
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// Unwrap implements Unwrapper.
func (c *prefixConn) Unwrap() (net.Conn, []byte) { return c.Conn, c.prefix }

// CloseWrite half-closes the inner conn when it supports it.
func (c *prefixConn) CloseWrite() error {
	if cw, ok := c.Conn.(closeWriter); ok {
		return cw.CloseWrite()
	}
	return errors.New("relay: conn cannot half-close")
}

type closeWriter interface{ CloseWrite() error }

// Splice copies client→origin and origin→client until both directions have
// ended, ctx is cancelled, or no byte moved either way for idle (0 means no
// idle timeout). When one direction reaches EOF, the other side is
// half-closed with CloseWrite and the opposite direction goes on. Bytes
// pending in wrappers (see Unwrap) are sent first, then the raw conns are
// copied with io.CopyN, so two *net.TCPConn are spliced by the kernel.
// Splice closes both conns before it returns.
//
// The error is nil when both directions ended with EOF, ErrIdle after the
// idle timeout, ctx's error after cancellation, or else the first failure,
// naming its direction.
func Splice(ctx context.Context, client, origin net.Conn, idle time.Duration) (Stats, error) {
	sp := &splicer{idle: idle, client: client, origin: origin}
	sp.touch()
	stop := context.AfterFunc(ctx, func() { sp.abort(ctx.Err()) })
	defer stop()
	var watchdog *time.Timer
	if idle > 0 {
		sp.mu.Lock() // watch takes the lock, so it sees sp.timer set
		watchdog = time.AfterFunc(idle, sp.watch)
		sp.timer = watchdog
		sp.mu.Unlock()
	}

	cRaw, cPending := Unwrap(client)
	oRaw, oPending := Unwrap(origin)
	var st Stats
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		st.Up = sp.pipe("client→origin", oRaw, cRaw, cPending)
	}()
	go func() {
		defer wg.Done()
		st.Down = sp.pipe("origin→client", cRaw, oRaw, oPending)
	}()
	wg.Wait()
	sp.mu.Lock()
	sp.done = true
	sp.mu.Unlock()
	if watchdog != nil {
		watchdog.Stop()
	}
	client.Close()
	origin.Close()
	sp.mu.Lock()
	defer sp.mu.Unlock()
	return st, sp.err
}

// splicer is the state shared by both directions of one Splice.
type splicer struct {
	idle           time.Duration
	client, origin net.Conn
	last           atomic.Int64 // unix nanoseconds of the last observed progress

	mu      sync.Mutex
	err     error // the first cause of the end; nil for two clean EOFs
	aborted bool
	done    bool
	timer   *time.Timer
}

func (sp *splicer) touch() { sp.last.Store(time.Now().UnixNano()) }

func (sp *splicer) sinceLast() time.Duration {
	return time.Duration(time.Now().UnixNano() - sp.last.Load())
}

// abort records cause (when it is the first) and closes both conns, which
// unblocks both directions.
func (sp *splicer) abort(cause error) {
	sp.mu.Lock()
	if sp.aborted {
		sp.mu.Unlock()
		return
	}
	sp.aborted = true
	if sp.err == nil {
		sp.err = cause
	}
	sp.mu.Unlock()
	sp.client.Close()
	sp.origin.Close()
}

func (sp *splicer) isAborted() bool {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	return sp.aborted
}

// watch is the idle backstop for a direction blocked in a write (which no
// read deadline interrupts): it aborts after twice the idle timeout
// without progress.
func (sp *splicer) watch() {
	if sp.sinceLast() >= 2*sp.idle {
		sp.abort(ErrIdle)
		return
	}
	sp.mu.Lock()
	if !sp.done && !sp.aborted {
		sp.timer.Reset(sp.idle)
	}
	sp.mu.Unlock()
}

// pipe copies src to dst after writing pending to dst, and returns the
// number of bytes written. On EOF it half-closes dst; on failure it aborts
// the whole splice.
func (sp *splicer) pipe(dir string, dst, src net.Conn, pending []byte) int64 {
	var n int64
	// Clear deadlines left by a handshake.
	src.SetReadDeadline(time.Time{})
	dst.SetWriteDeadline(time.Time{})
	if len(pending) > 0 {
		w, err := dst.Write(pending)
		n += int64(w)
		if err != nil {
			sp.fail(dir, err)
			return n
		}
		sp.touch()
	}
	for {
		if sp.idle > 0 {
			src.SetReadDeadline(time.Now().Add(sp.idle))
		}
		w, err := io.CopyN(dst, src, chunk)
		n += w
		if w > 0 {
			sp.touch()
		}
		switch {
		case err == nil:
			continue
		case errors.Is(err, io.EOF):
			if cw, ok := dst.(closeWriter); ok {
				if cerr := cw.CloseWrite(); cerr == nil || sp.isAborted() {
					return n
				}
			}
			// The peer cannot learn of the EOF any other way.
			sp.abort(nil)
			return n
		case sp.idle > 0 && errors.Is(err, os.ErrDeadlineExceeded) && !sp.isAborted():
			if sp.sinceLast() < sp.idle {
				continue // the other direction is busy, or this one moved a little
			}
			sp.abort(ErrIdle)
			return n
		default:
			sp.fail(dir, err)
			return n
		}
	}
}

// fail aborts the splice with err unless it was already aborted (then err
// is only the echo of closing the conns).
func (sp *splicer) fail(dir string, err error) {
	if sp.isAborted() {
		return
	}
	sp.abort(&DirError{Dir: dir, Err: err})
}

// DirError is a copy failure in one direction of a splice.
type DirError struct {
	// Dir is "client→origin" or "origin→client".
	Dir string
	// Err is the underlying error.
	Err error
}

// Error names the direction and the failure.
func (e *DirError) Error() string { return "relay: " + e.Dir + ": " + e.Err.Error() }

// Unwrap returns the underlying error.
func (e *DirError) Unwrap() error { return e.Err }
