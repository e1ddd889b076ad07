// Package relay splices two connections together: it copies both ways,
// propagates half-close with CloseWrite, closes idle tunnels and counts bytes.
//
// A tunnel costs little while it is idle: each direction waits for its
// source to become readable without holding a buffer or a pipe. Between two
// TCP sockets on Linux the first 64 KiB of each direction are copied with
// read(2) and write(2) through a pooled buffer (cheaper than splice for the
// few KiB most tunnels carry), and the rest moves through a pooled kernel
// pipe with splice(2) and never enters Sluice's memory; the buffer or pipe
// goes back to the pool as soon as the source has nothing more to read.
// Other conns (TLS, test pipes) are copied through pooled buffers. A
// direction of a Start between two TCP sockets that has waited for its
// source for a while parks in the relay's own epoll instance (see
// park_linux.go) and holds no goroutine until bytes come.
package relay

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

var (
	// ErrIdle means no byte moved either way for the idle timeout.
	ErrIdle = errors.New("relay: idle timeout")

	// errParked is what a direction's copy returns when it parked (see
	// park_linux.go): its goroutine must return without touching the
	// half, which another goroutine may already be running.
	errParked = errors.New("relay: parked")
)

// Stats counts the bytes a splice moved.
type Stats struct {
	// Up is the number of bytes copied from the client to the origin,
	// including bytes the client had sent before the splice began.
	Up int64
	// Down is the number of bytes copied from the origin to the client.
	Down int64
}

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

// take is Unwrap for a splice, which reads c from now on: it also drops
// the references WithPrefix's conns keep to their prefix, so that the
// buffer a handshake read into is freed once the prefix is forwarded.
func take(c net.Conn) (raw net.Conn, pending []byte) {
	raw, pending = Unwrap(c)
	for range maxUnwrap {
		u, ok := c.(Unwrapper)
		if !ok {
			break
		}
		if pc, ok := c.(*prefixConn); ok {
			pc.prefix = nil
		}
		if c, _ = u.Unwrap(); c == nil {
			break
		}
	}
	return raw, pending
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

// closeWrite half-closes; a variable so that tests can count the calls.
var closeWrite = closeWriter.CloseWrite

// setWriteDeadline sets a direction's first write deadline on its
// destination; a variable so that tests can count the calls.
var setWriteDeadline = net.Conn.SetWriteDeadline

// Splice copies client→origin and origin→client until both directions have
// ended, ctx is cancelled, or no byte moved either way for idle (0 means no
// idle timeout). When one direction reaches EOF, the other side is
// half-closed with CloseWrite and the opposite direction goes on. Bytes
// pending in wrappers (see Unwrap) are sent first, then the raw conns are
// copied: two TCP sockets by splice(2) on Linux, anything else through
// pooled buffers. The calling goroutine copies origin→client and one new
// goroutine client→origin. Splice closes both conns before it returns.
//
// The error is nil when both directions ended with EOF, ErrIdle after the
// idle timeout, ctx's error after cancellation, or else the first failure,
// naming its direction. Unless the error is nil, both conns are reset
// (closed with SO_LINGER 0) rather than closed with a FIN, so that neither
// peer can take a cut transfer for a complete one.
func Splice(ctx context.Context, client, origin net.Conn, idle time.Duration) (Stats, error) {
	sp := newSplicer(ctx, client, origin, idle)
	done := make(chan struct{})
	go func() {
		sp.up.run()
		close(done)
	}()
	sp.down.run()
	<-done
	return sp.finish()
}

// Start splices like Splice but returns at once: two new goroutines copy
// the two directions (one, when the client conn is an Inliner that takes
// the other), and the last of them to end closes both conns and
// calls done with what Splice would have returned. It lets the goroutine
// that handled a client's request end (and free its stack, its buffers and
// its request) while the tunnel lives on. Between two TCP sockets on
// Linux, a direction that waits for its source longer than parkAfter
// parks (park_linux.go): its goroutine ends, and a new one carries on when
// bytes come, so that an idle tunnel costs its splicer and two fds.
//
// When ctx carries a hold (WithHold), Start calls it first and the release
// it returned after done has returned. done must not be nil.
func Start(ctx context.Context, client, origin net.Conn, idle time.Duration, done func(Stats, error)) {
	sp := newSplicer(ctx, client, origin, idle)
	sp.done = done
	if hold, ok := ctx.Value(holdKey{}).(func() func()); ok {
		sp.release = hold()
	}
	sp.left.Store(2)
	if in := inliner(client); in != nil && in.Inline(sp.runUp) {
		go sp.runHalf(&sp.down)
		return
	}
	go sp.runHalf(&sp.up)
	go sp.runHalf(&sp.down)
}

// Inliner is implemented by a client conn whose server can carry one
// direction of its tunnel on the goroutine that served its handshake,
// once the handler that called Start has returned: a tunnel then starts
// one goroutine, not two. Inline reports false when it cannot (the conn
// is not served by such a goroutine, or no longer); Start then starts
// the direction on a goroutine of its own. A conn that accepts run must
// call it exactly once.
type Inliner interface {
	Inline(run func()) bool
}

// inliner returns the Inliner among c and the conns it wraps (see
// Unwrap), or nil.
func inliner(c net.Conn) Inliner {
	for range maxUnwrap {
		if in, ok := c.(Inliner); ok {
			return in
		}
		u, ok := c.(Unwrapper)
		if !ok {
			return nil
		}
		if c, _ = u.Unwrap(); c == nil {
			return nil
		}
	}
	return nil
}

// runUp runs the client→origin direction of a Start (see Inliner).
func (sp *splicer) runUp() { sp.runHalf(&sp.up) }

// holdKey is the context key of WithHold.
type holdKey struct{}

// WithHold returns ctx carrying hold, which Start calls when a tunnel
// starts; the func hold returns is called when the tunnel has ended and its
// done func has returned. A server counts its running tunnels this way, so
// that its shutdown waits for their last log lines although the handlers
// that started them returned long before.
func WithHold(ctx context.Context, hold func() (release func())) context.Context {
	return context.WithValue(ctx, holdKey{}, hold)
}

func newSplicer(ctx context.Context, client, origin net.Conn, idle time.Duration) *splicer {
	sp := &splicer{idle: idle, client: client, origin: origin}
	sp.touch()
	cRaw, cPending := take(client)
	oRaw, oPending := take(origin)
	sp.up = half{sp: sp, dir: dirUp, dst: oRaw, src: cRaw, pending: cPending}
	sp.down = half{sp: sp, dir: dirDown, dst: cRaw, src: oRaw, pending: oPending}
	if cTCP, ok := cRaw.(*net.TCPConn); ok {
		if oTCP, ok := oRaw.(*net.TCPConn); ok {
			// One syscall.RawConn per socket, which both directions share.
			cRC, cErr := cTCP.SyscallConn()
			oRC, oErr := oTCP.SyscallConn()
			if cErr == nil && oErr == nil {
				sp.up.srcRaw, sp.up.dstRaw = cRC, oRC
				sp.down.srcRaw, sp.down.dstRaw = oRC, cRC
			}
		}
	}
	// Last: a context that has ended runs the cut at once, on another
	// goroutine, and the cut reads the directions written above.
	sp.watch(ctx)
	return sp
}

// runHalf runs one direction of a Start; the last one to end finishes.
func (sp *splicer) runHalf(h *half) {
	if h.run() {
		sp.halfDone()
	}
}

// halfDone counts the end of one direction of a Start; the last one to
// end finishes.
func (sp *splicer) halfDone() {
	if sp.left.Add(-1) > 0 {
		return
	}
	if sp.release != nil {
		defer sp.release()
	}
	sp.done(sp.finish())
}

// The directions of a splice, as DirError names them.
const (
	dirUp   = "client→origin"
	dirDown = "origin→client"
)

// splicer is the state of one Splice or Start: both directions, and what
// they share.
type splicer struct {
	idle           time.Duration
	client, origin net.Conn
	up, down       half
	last           atomic.Int64 // unix nanoseconds of the last byte read or written either way
	group          *watchGroup  // of ctx, while watched (watch.go)
	next, prev     *splicer     // in group's list
	watched        bool         // set by watch before the directions start, never after
	stopWatch      func() bool  // stops the AfterFunc of a ctx that is not a pointer (watch.go)
	left           atomic.Int32 // directions of a Start still running
	eofs           atomic.Int32 // directions that ended with their source's EOF
	done           func(Stats, error)
	release        func() // of the hold, or nil

	mu      sync.Mutex
	err     error // the first cause of the end; nil for two clean EOFs
	aborted bool
}

func (sp *splicer) touch() { sp.last.Store(time.Now().UnixNano()) }

// cancel ends the splice on ctx's end (a server's shutdown, a client gone).
// A tunnel whose two directions have both reached their source's EOF is
// complete: every byte was handed to the kernel, and resetting the sockets
// now would throw away what still waits in their send buffers. It is
// closed with a FIN, and its result stays nil.
func (sp *splicer) cancel(cause error) {
	if sp.eofs.Load() == 2 {
		cause = nil
	}
	sp.abort(cause)
}

// abort records cause (when it is the first) and closes both conns, which
// unblocks both directions. Unless cause is nil, the conns are reset.
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
	if cause != nil {
		reset(sp.client)
		reset(sp.origin)
	}
	sp.client.Close()
	sp.origin.Close()
	sp.unparkAll() // a parked direction has no goroutine for the close to wake
}

// finish closes both conns once both directions have ended (after two
// clean EOFs each peer has had its FIN already) and returns the result.
func (sp *splicer) finish() (Stats, error) {
	sp.unwatch()
	sp.mu.Lock()
	aborted := sp.aborted
	sp.aborted = true
	err := sp.err
	sp.mu.Unlock()
	if !aborted {
		sp.client.Close()
		sp.origin.Close()
	}
	return Stats{Up: sp.up.n, Down: sp.down.n}, err
}

func (sp *splicer) isAborted() bool {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	return sp.aborted
}

// expired handles err from a wait on a conn: when it is a deadline that
// passed although a byte moved either way within the idle timeout, it moves
// the deadline to idle after that byte with set and reports true (wait
// again). When the tunnel was idle for the whole timeout, it aborts the
// splice with ErrIdle.
func (sp *splicer) expired(err error, set func(time.Time) error) bool {
	if sp.idle <= 0 || !errors.Is(err, os.ErrDeadlineExceeded) || sp.isAborted() {
		return false
	}
	last := time.Unix(0, sp.last.Load())
	if time.Since(last) < sp.idle {
		return set(last.Add(sp.idle)) == nil
	}
	sp.abort(ErrIdle)
	return false
}

// fail aborts the splice with err unless it was already aborted (then err
// is only the echo of closing the conns).
func (sp *splicer) fail(dir string, err error) {
	if sp.isAborted() {
		return
	}
	sp.abort(&DirError{Dir: dir, Err: err})
}

// eof propagates the end of h's source to its destination. When the
// other direction has ended already, a TCP destination is left to finish,
// whose close(2) sends the same FIN: its source was read to its end, so
// the close cannot turn into a reset, and a shutdown(2) is saved. When the
// half-close fails (the destination's peer reset it: ENOTCONN), the
// destination's peer cannot learn of the end: the splice fails with h's
// error, and both sides are reset rather than told of a clean end.
func (sp *splicer) eof(h *half) {
	if sp.eofs.Add(1) == 2 && isTCP(h.dst) {
		return
	}
	cw, ok := h.dst.(closeWriter)
	if !ok {
		// The peer cannot learn of the EOF any other way.
		sp.abort(nil)
		return
	}
	if err := closeWrite(cw); err != nil {
		sp.fail(h.dir, err)
	}
}

// Cut closes c so that its peer sees an error, not an end: a RST instead
// of a FIN where a TCP socket lies underneath (see reset). For a
// connection told it has a tunnel that is cut before the tunnel starts.
func Cut(c net.Conn) {
	reset(c)
	c.Close()
}

// reset makes closing c send a RST instead of a FIN, when a TCP socket
// lies underneath: on a cut tunnel the peer must see an error, not an end.
// It sees through Unwrappers and through wrappers that reveal their conn
// with NetConn (*tls.Conn): such a wrapper's socket is reset and closed at
// once, so that the wrapper's own goodbye (TLS close_notify) cannot make
// the cut look clean.
func reset(c net.Conn) {
	wrapped := false
	for range maxUnwrap {
		switch t := c.(type) {
		case *net.TCPConn:
			t.SetLinger(0)
			if wrapped {
				t.Close()
			}
			return
		case Unwrapper:
			if c, _ = t.Unwrap(); c == nil {
				return
			}
		case interface{ NetConn() net.Conn }:
			if c = t.NetConn(); c == nil {
				return
			}
			wrapped = true
		default:
			return
		}
	}
}

// half is one direction of a splice: it writes pending, then copies src to
// dst until src ends.
type half struct {
	sp       *splicer
	dir      string
	dst, src net.Conn
	pending  []byte
	n        int64           // bytes written to dst
	armed    int64           // unix nanoseconds when a buffered copy last moved dst's write deadline
	wArmed   bool            // dst's write deadline was set (write_linux.go); before, dst has none of the relay's
	state    atomic.Int32    // halfRunning, or halfParked while no goroutine waits for src (park_linux.go)
	slot     uint32          // while parked: its slot in the parker
	inEpoll  bool            // src is registered with the parker's epoll instance
	parking  bool            // parks when src has nothing to read (after parkAfter)
	srcRaw   syscall.RawConn // src's, between two TCP sockets (the splice path); else nil
	dstRaw   syscall.RawConn // dst's, likewise
	srcRC    syscall.RawConn // while parked: src's, to learn whether it was closed
	dstRC    syscall.RawConn // while parked: dst's, likewise (nil when dst has none)
	pu       pump            // the splice loop's state
}

// run copies until src ends or the splice is aborted, and propagates EOF
// or the failure. It reports false when the direction parked instead (see
// park_linux.go): then it has not ended, and h is no longer the caller's.
func (h *half) run() bool {
	var rdl, wdl time.Time // zero clears deadlines left by a handshake
	if h.sp.idle > 0 || h.canPark() {
		now := time.Now()
		if h.sp.idle > 0 {
			rdl = now.Add(h.sp.idle)
			wdl = rdl
		}
		if h.canPark() && (h.sp.idle <= 0 || h.sp.idle > parkAfter) {
			// The read deadline says when to start parking (see
			// park_linux.go); the idle timeout of a parked direction
			// is the parker's sweep.
			rdl = now.Add(parkAfter)
		}
	}
	h.src.SetReadDeadline(rdl)
	if !lazyWriteDeadline || h.dstRaw == nil {
		setWriteDeadline(h.dst, wdl)
	} // else the first write that would block sets it (armWrite)
	err := h.writeAll(h.pending, isTCP(h.dst))
	h.pending = nil
	if err == nil {
		err = h.copy()
	}
	if err == errParked {
		return false
	}
	h.ended(err)
	return true
}

// ended propagates the end of h's copy: EOF to its destination, or the
// failure to the whole splice.
func (h *half) ended(err error) {
	switch {
	case err == io.EOF:
		h.sp.eof(h)
	case err == ErrIdle:
		h.sp.abort(ErrIdle)
	case err != nil:
		h.sp.fail(h.dir, err)
	}
}

// copy moves src to dst: by splice(2) between two TCP sockets where the
// platform has it, else through pooled buffers. It returns io.EOF when
// src ended.
func (h *half) copy() error {
	if isTCP(h.src) && isTCP(h.dst) {
		if ok, err := h.splice(); ok {
			return err
		}
		if h.sp.idle <= 0 { // no idle timeout: drop run's deadline to start parking
			h.src.SetReadDeadline(time.Time{})
		}
	}
	return h.copyBuffered()
}

func isTCP(c net.Conn) bool {
	_, ok := c.(*net.TCPConn)
	return ok
}

// writeAll writes b to dst whole. A write to a TCP socket that hits its
// deadline while the tunnel is busy is resumed (retry); any other conn
// (TLS) cannot resume a timed-out write, so there the timeout ends the
// splice as idle.
func (h *half) writeAll(b []byte, retry bool) error {
	if !retry && h.sp.idle > 0 && len(b) > 0 {
		// Keep the deadline at least 15/16 of the idle timeout away: a
		// write is idle when it alone takes nothing for that long.
		if now := time.Now().UnixNano(); now-h.armed > int64(h.sp.idle/16) {
			h.dst.SetWriteDeadline(time.Unix(0, now).Add(h.sp.idle))
			h.armed = now
		}
	}
	for len(b) > 0 {
		var n int
		var err error
		if retry && h.dstRaw != nil {
			n, err = h.writeRaw(b)
		} else {
			n, err = h.dst.Write(b)
		}
		h.n += int64(n)
		b = b[n:]
		if n > 0 {
			h.sp.touch()
		}
		if err != nil {
			if retry && h.sp.expired(err, h.dst.SetWriteDeadline) {
				continue
			}
			if !retry && h.sp.idle > 0 && errors.Is(err, os.ErrDeadlineExceeded) {
				return ErrIdle
			}
			return err
		}
	}
	return nil
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
