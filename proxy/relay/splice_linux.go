package relay

import (
	"io"
	"time"

	"golang.org/x/sys/unix"
)

// spliceAfter is how many bytes a direction copies through a buffer
// before it splices: most tunnels carry a few KiB each way, and for them
// read(2) and write(2) are cheaper than splice(2) through a pipe.
const spliceAfter = 64 << 10

// spliceFlags: the pipes are non-blocking, and so are Go's sockets.
const spliceFlags = unix.SPLICE_F_MOVE | unix.SPLICE_F_NONBLOCK

// pump is the state of one direction's splice loop; it lives in its half,
// so that a tunnel's state is one allocation. Its fill and drain methods
// run as syscall.RawConn callbacks: they return false when the socket
// would block, so that the runtime poller parks the goroutine until it is
// ready, and true when done.
type pump struct {
	h      *half
	p      *pipe              // held only while bytes flow; nil while waiting
	inPipe int                // bytes in p
	buf    *[]byte            // instead of p for the first spliceAfter bytes, or when no pipe could be had
	inBuf  int                // bytes in buf
	early  bool               // buf is for the first spliceAfter bytes
	err    error              // the failure of the last callback
	eof    bool               // the source ended
	moved  bool               // splice(2) has moved bytes: no falling back now
	park   bool               // on EAGAIN, fill reports block instead of letting Go's poller wait (see park_linux.go)
	block  bool               // fill found nothing to read and did not wait
	mode   int                // what fn does: pumpFill (src.Read), pumpDrain or pumpWrite (dst.Write)
	arm    bool               // a write would block and dst's write deadline is not set yet (see armWrite)
	wb     []byte             // pumpWrite: the bytes to write
	wn     int                // pumpWrite: how many of them were written
	fn     func(uintptr) bool // fill, drain or write: one closure per direction, made once
}

// What a pump's fn does.
const (
	pumpFill = iota
	pumpDrain
	pumpWrite
)

// callback returns pu's fn, made on first use.
func (pu *pump) callback() func(uintptr) bool {
	if pu.fn == nil {
		pu.fn = func(fd uintptr) bool {
			switch pu.mode {
			case pumpDrain:
				return pu.drain(fd)
			case pumpWrite:
				return pu.write(fd)
			}
			return pu.fill(fd)
		}
	}
	return pu.fn
}

// splice copies h.src to h.dst, two TCP sockets, with splice(2) through a
// pooled pipe that it holds only while bytes flow. ok is false (nothing
// was read) when the kernel cannot splice these sockets. err is io.EOF
// when the source ended.
func (h *half) splice() (ok bool, err error) {
	src, dst := h.srcRaw, h.dstRaw
	if src == nil || dst == nil {
		return false, nil
	}
	pu := &h.pu
	*pu = pump{h: h, moved: pu.moved, fn: pu.fn, park: h.parking}
	fn := pu.callback()
	defer func() {
		if err != errParked { // a parked h may already run elsewhere
			pu.release()
		}
	}()
	for {
		pu.err = nil
		pu.mode = pumpFill
		if err := src.Read(fn); err != nil {
			if h.startParking(err) {
				pu.park = true
				continue
			}
			if h.sp.expired(err, h.src.SetReadDeadline) {
				continue
			}
			return true, err
		}
		if pu.block {
			pu.block = false
			if h.park(src) {
				return true, errParked
			}
			pu.park = false // for the rest of this call: wait in Go's poller
			if h.sp.idle > 0 {
				// startParking cleared the read deadline: the idle
				// timeout was the sweep's, which does not see h now.
				h.src.SetReadDeadline(time.Unix(0, h.sp.last.Load()).Add(h.sp.idle))
			}
			continue
		}
		if pu.inBuf > 0 || pu.inPipe > 0 {
			h.sp.touch() // bytes read are activity: a stale write deadline must not call them idle
		}
		switch {
		case pu.err == unix.EINVAL && !pu.moved:
			return false, nil // sockets splice(2) cannot read
		case pu.err != nil:
			return true, pu.err
		case pu.eof:
			return true, io.EOF
		case pu.inBuf > 0:
			b := (*pu.buf)[:pu.inBuf]
			pu.inBuf = 0
			if err := h.writeAll(b, true); err != nil {
				return true, err
			}
			continue
		}
		pu.moved = true
		for pu.inPipe > 0 {
			pu.err = nil
			pu.mode = pumpDrain
			if err := dst.Write(fn); err != nil {
				if h.armAfter(err) || h.sp.expired(err, h.dst.SetWriteDeadline) {
					continue
				}
				return true, err
			}
			if pu.arm {
				pu.arm = false
				h.armWrite()
				continue
			}
			if pu.err != nil {
				return true, pu.err
			}
		}
		h.sp.touch()
	}
}

// fill moves what the source socket holds into the pipe (or, for the
// first spliceAfter bytes and when no pipe could be had, into a buffer).
// The pipe is empty on entry; when the socket has nothing, the pipe (or
// buffer) goes back to the pool before the goroutine parks.
func (pu *pump) fill(fd uintptr) bool {
	if pu.early && pu.h.n >= spliceAfter { // enough buffered: splice from now on
		largeBufs.Put(pu.buf)
		pu.buf, pu.early = nil, false
	}
	if pu.p == nil && pu.buf == nil {
		// The first bytes of a direction go through a buffer: for a
		// short exchange read(2) and write(2) cost less than two
		// splice(2) calls and a pipe taken from the pool.
		if pu.h.n >= spliceAfter {
			pu.p = getPipe()
		} else {
			pu.early = true
		}
		if pu.p == nil {
			pu.buf = largeBufs.Get().(*[]byte)
		}
	}
	for {
		var n int
		var err error
		if pu.p != nil {
			var m int64
			m, err = unix.Splice(int(fd), nil, pu.p.w, nil, pu.p.size, spliceFlags)
			n = int(m)
		} else {
			n, err = unix.Read(int(fd), *pu.buf)
		}
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			pu.release()
			pu.block = pu.park
			return pu.block
		case err != nil:
			pu.err = err
		case n == 0:
			pu.eof = true
		case pu.p != nil:
			pu.inPipe = n
		default:
			pu.inBuf = n
		}
		return true
	}
}

// drain moves the pipe's bytes to the destination socket.
func (pu *pump) drain(fd uintptr) bool {
	moved := false
	for pu.inPipe > 0 {
		n, err := unix.Splice(pu.p.r, nil, int(fd), nil, pu.inPipe, spliceFlags)
		switch {
		case n > 0:
			pu.inPipe -= int(n)
			pu.h.n += n
			moved = true
		case err == unix.EINTR:
		case err == unix.EAGAIN:
			if moved { // the destination is slow, not idle
				pu.h.sp.touch()
			}
			if !pu.h.wArmed { // set the write deadline before the wait
				pu.arm = true
				return true
			}
			return false
		case err == nil: // nothing moved and no error: never from a pipe that holds bytes
			pu.err = io.ErrNoProgress
			return true
		default:
			pu.err = err
			return true
		}
	}
	return true
}

// release gives the pipe back to the pool when it is empty, or closes it
// when it still holds bytes (a failed destination), and gives the buffer
// back.
func (pu *pump) release() {
	if pu.p != nil {
		if pu.inPipe == 0 {
			putPipe(pu.p)
		} else {
			pu.p.close()
		}
		pu.p, pu.inPipe = nil, 0
	}
	if pu.buf != nil {
		largeBufs.Put(pu.buf)
		pu.buf, pu.inBuf, pu.early = nil, 0, false
	}
}
