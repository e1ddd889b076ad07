package relay

import (
	"errors"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Parking: a direction of a tunnel started with Start whose source has
// nothing to read does not keep a goroutine waiting for it. It registers
// the source socket with the relay's own epoll instance (EPOLLONESHOT) and
// its goroutine ends; one goroutine for the whole process waits on that
// epoll instance, and when the socket becomes readable (or hangs up) it
// starts a new goroutine that carries on where the direction stopped. An
// idle tunnel then costs no goroutine stack, no timer and no buffer: only
// its two sockets and its splicer.
//
// The same goroutine enforces the idle timeout of parked directions: every
// tick it ends, as idle, the tunnels whose last byte moved longer ago than
// their idle timeout (a direction that waits to write keeps its goroutine
// and its write deadline, as before). It exits when nothing is parked.
//
// A parked direction belongs to whoever claims it first (a CAS on its
// state): the waiter when its socket is ready, or abort (ctx cancelled,
// idle, the other direction failed), which ends it at once.

// States of a half.
const (
	halfRunning int32 = iota
	halfParked
)

// Bounds of the tick of the parked directions' idle sweep: a quarter of
// the shortest idle timeout of a parked direction, within these.
const (
	minParkTick = 10 * time.Millisecond
	maxParkTick = 250 * time.Millisecond
)

// parker is the epoll instance of parked directions and its waiter.
type parker struct {
	epfd int
	file *os.File        // epfd, for Go's poller: the waiter waits on it without a thread of its own
	rc   syscall.RawConn // of file

	mu      sync.Mutex
	slots   []*half  // parked halves by slot; nil when free
	gens    []uint32 // generation of each slot, against stale events
	free    []uint32 // free slots
	parked  int
	waiting bool // the waiter goroutine runs
}

var parkers struct {
	once sync.Once
	p    *parker // nil when epoll is unavailable: directions then wait in Go's poller
}

// getParker returns the process's parker, made on first use.
func getParker() *parker {
	parkers.once.Do(func() {
		epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
		if err != nil {
			return
		}
		if err := unix.SetNonblock(epfd, true); err != nil {
			unix.Close(epfd)
			return
		}
		f := os.NewFile(uintptr(epfd), "relay-epoll")
		rc, err := f.SyscallConn()
		if err != nil {
			f.Close()
			return
		}
		parkers.p = &parker{epfd: epfd, file: f, rc: rc}
	})
	return parkers.p
}

// parkAfter is how long a direction waits for its source in Go's poller
// before it parks: most tunnels are short, and for them a wait in Go's
// poller (where the socket is registered already) costs less than an
// epoll_ctl(2), a wake-up by the waiter and a new goroutine. run sets the
// source's read deadline to parkAfter (or to the idle timeout when that
// is shorter); when it passes, the deadline is cleared and from then on
// the direction parks whenever its source has nothing to read.
const parkAfter = 100 * time.Millisecond

// canPark reports whether h may park: only the directions of a Start,
// whose goroutines may end while the tunnel lives on, between two TCP
// sockets (the splice path).
func (h *half) canPark() bool {
	return h.sp.done != nil && isTCP(h.src) && isTCP(h.dst) && getParker() != nil
}

// startParking handles err of a wait for h's source in Go's poller: when
// it is the deadline run set to start parking, it clears it and reports
// true (park from now on).
func (h *half) startParking(err error) bool {
	if h.parking || !errors.Is(err, os.ErrDeadlineExceeded) || !h.canPark() || h.sp.isAborted() {
		return false
	}
	h.parking = true
	h.src.SetReadDeadline(time.Time{})
	return true
}

// park parks h, whose source src had nothing to read (fill said so with
// pu.block). It reports false when h could not park and must wait for src
// in Go's poller instead.
func (h *half) park(src syscall.RawConn) bool {
	p := parkers.p
	parked := false
	// The fd is held during Control: a concurrent Close cannot let its
	// number be reused by another socket before epoll_ctl.
	if err := src.Control(func(fd uintptr) { parked = p.park(h, src, int(fd)) }); err != nil {
		return false
	}
	return parked
}

// park registers h and arms fd, its source, in the epoll instance. It
// reports false when h must not park after all (epoll_ctl failed, or the
// splice was aborted meanwhile and nobody else claimed h). Once it
// reports true, h may already run in another goroutine.
func (p *parker) park(h *half, src syscall.RawConn, fd int) bool {
	p.mu.Lock()
	h.srcRC, h.dstRC = src, h.dstRaw
	var slot uint32
	if n := len(p.free); n > 0 {
		slot = p.free[n-1]
		p.free = p.free[:n-1]
	} else {
		slot = uint32(len(p.slots))
		p.slots = append(p.slots, nil)
		p.gens = append(p.gens, 0)
	}
	p.gens[slot]++
	p.slots[slot] = h
	h.slot = slot
	p.parked++
	startWaiter := !p.waiting
	p.waiting = true
	h.state.Store(halfParked)
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: int32(slot), Pad: int32(p.gens[slot])}
	op := unix.EPOLL_CTL_MOD
	if !h.inEpoll {
		op = unix.EPOLL_CTL_ADD
	}
	err := epollCtl(p.epfd, op, fd, &ev)
	if err == nil {
		h.inEpoll = true
	}
	p.mu.Unlock()
	if startWaiter {
		go p.wait()
	}
	if err != nil || h.sp.isAborted() {
		// Not parked after all, unless another goroutine claimed h
		// first: then it is that goroutine's.
		return !h.claim()
	}
	return true
}

// epollCtl is unix.EpollCtl; a variable so that tests can make it fail.
var epollCtl = unix.EpollCtl

// claim takes a parked h for the caller, who must then run it or end it.
// It reports false when h was not parked or another goroutine claimed it.
func (h *half) claim() bool {
	if !h.state.CompareAndSwap(halfParked, halfRunning) {
		return false
	}
	p := parkers.p
	p.mu.Lock()
	if p.slots[h.slot] == h {
		p.slots[h.slot] = nil
		p.free = append(p.free, h.slot)
	}
	p.parked--
	p.mu.Unlock()
	return true
}

// resume carries on a claimed direction in its new goroutine.
func (h *half) resume() {
	err := h.copy()
	if err == errParked {
		return
	}
	h.ended(err)
	h.sp.halfDone()
}

// wait is the waiter goroutine: it starts the directions whose sockets
// became ready, and every tick ends the parked tunnels idle for their
// timeout. It exits when nothing is parked.
func (p *parker) wait() {
	events := make([]unix.EpollEvent, 256)
	tick := maxParkTick
	lastSweep := time.Now()
	var ready []*half
	for {
		p.file.SetReadDeadline(time.Now().Add(tick))
		err := p.rc.Read(func(fd uintptr) bool {
			for {
				n, err := unix.EpollWait(int(fd), events, 0)
				if err == unix.EINTR {
					continue
				}
				if n <= 0 {
					return len(ready) > 0
				}
				p.mu.Lock()
				for _, ev := range events[:n] {
					slot := uint32(ev.Fd)
					if int(slot) < len(p.slots) && p.gens[slot] == uint32(ev.Pad) && p.slots[slot] != nil {
						ready = append(ready, p.slots[slot])
					}
				}
				p.mu.Unlock()
				if n < len(events) {
					return len(ready) > 0
				}
			}
		})
		for i, h := range ready {
			if h.claim() {
				go h.resume()
			}
			ready[i] = nil
		}
		ready = ready[:0]
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			// The epoll instance failed: wake every parked direction, and
			// let the next park start a new waiter.
			p.mu.Lock()
			hs := append([]*half(nil), p.slots...)
			p.waiting = false
			p.mu.Unlock()
			for _, h := range hs {
				if h != nil && h.claim() {
					go h.resume()
				}
			}
			return
		}
		if now := time.Now(); err != nil || now.Sub(lastSweep) >= tick {
			lastSweep = now
			var done bool
			if tick, done = p.sweep(); done {
				return
			}
		}
	}
}

// sweep ends the parked tunnels idle for their timeout, starts the parked
// directions whose source conn was closed by someone else (closing an fd
// takes it out of the epoll instance without an event: a connection's
// lifetime, a server's hard stop), fails the tunnels of parked directions
// whose destination was closed by someone else (after a half-close only
// one direction is left, parked on the conn that was not cut: nothing
// would wake it), and returns the next tick; done is true (and the waiter
// must exit) when nothing is parked.
func (p *parker) sweep() (tick time.Duration, done bool) {
	now := time.Now().UnixNano()
	tick = maxParkTick
	var idle []*splicer
	var closed, cut []*half
	p.mu.Lock()
	if p.parked == 0 {
		p.waiting = false
		p.mu.Unlock()
		return 0, true
	}
	for _, h := range p.slots {
		if h == nil {
			continue
		}
		if h.srcRC.Control(noControl) != nil { // closed
			closed = append(closed, h)
			continue
		}
		// Its destination is the other direction's source: checked above
		// when that one is parked too, and a running one's wait wakes on
		// the close; only after it ended (a half-close) is it checked here.
		if h.dstRC != nil && h.other().state.Load() != halfParked && h.dstRC.Control(noControl) != nil {
			cut = append(cut, h)
			continue
		}
		if h.sp.idle <= 0 {
			continue
		}
		if now-h.sp.last.Load() >= int64(h.sp.idle) {
			idle = append(idle, h.sp)
		}
		tick = min(tick, max(h.sp.idle/4, minParkTick))
	}
	p.mu.Unlock()
	for _, h := range closed {
		if h.claim() {
			go h.resume() // its copy fails on the closed conn, and the splice with it
		}
	}
	if len(idle) > 0 || len(cut) > 0 {
		// Not on the waiter: an abort ends the tunnels, and their done
		// funcs (access lines) must not delay the other tunnels' wake-ups.
		go func() {
			for _, h := range cut {
				h.sp.fail(h.dir, net.ErrClosed) // resets the other side, ends h (unparkAll)
			}
			for _, sp := range idle {
				sp.abort(ErrIdle)
			}
		}()
	}
	return tick, false
}

// other returns the opposite direction of h's splice.
func (h *half) other() *half {
	if h == &h.sp.up {
		return &h.sp.down
	}
	return &h.sp.up
}

// noControl is a Control func that does nothing: Control then only says
// whether the conn is still open.
func noControl(uintptr) {}

// unparkAll ends the parked directions of an aborted splice.
func (sp *splicer) unparkAll() {
	for _, h := range [2]*half{&sp.up, &sp.down} {
		if h.state.Load() == halfParked && h.claim() {
			h.ended(net.ErrClosed)
			sp.halfDone()
		}
	}
}
