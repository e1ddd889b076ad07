package relay

import (
	"errors"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Write deadlines between two TCP sockets are set lazily: a direction
// writes with write(2) (or splice(2)) through dst's syscall.RawConn, and
// only when a write would block does it set dst's write deadline (the
// idle timeout, or none) and wait. Most tunnels never fill a socket's send
// buffer, and a deadline is a runtime timer per socket, set and deleted
// again for every tunnel. A deadline left on dst by a handshake is
// replaced the same way: the first write that sees it passed arms anew.

// lazyWriteDeadline: run leaves dst's write deadline to armWrite when dst
// is written through its RawConn.
const lazyWriteDeadline = true

// armWrite sets dst's write deadline, once per direction: the idle
// timeout from now, or none. A wait for dst from then on sees it, and
// splicer.expired extends it while the tunnel moves bytes.
func (h *half) armWrite() {
	h.wArmed = true
	var d time.Time
	if h.sp.idle > 0 {
		d = time.Now().Add(h.sp.idle)
	}
	setWriteDeadline(h.dst, d)
}

// armAfter handles err of a write through dst's RawConn: a deadline that
// passed before the direction set its own was a handshake's; it arms the
// direction's and reports true (write again).
func (h *half) armAfter(err error) bool {
	if h.wArmed || !errors.Is(err, os.ErrDeadlineExceeded) {
		return false
	}
	h.armWrite()
	return true
}

// writeRaw writes b to dst, a TCP socket, with write(2) through dstRaw,
// arming dst's write deadline when a write would block. It returns how
// many bytes it wrote.
func (h *half) writeRaw(b []byte) (int, error) {
	pu := &h.pu
	pu.h = h
	fn := pu.callback()
	pu.wb, pu.wn, pu.err, pu.arm = b, 0, nil, false
	defer func() { pu.wb = nil }()
	for {
		pu.mode = pumpWrite
		err := h.dstRaw.Write(fn)
		if pu.arm {
			pu.arm = false
			h.armWrite()
			continue
		}
		if err != nil && h.armAfter(err) {
			continue
		}
		if err == nil && pu.err != nil {
			err = os.NewSyscallError("write", pu.err)
		}
		return pu.wn, err
	}
}

// write is pu's fn for writeRaw: it writes what is left of pu.wb.
func (pu *pump) write(fd uintptr) bool {
	for pu.wn < len(pu.wb) {
		n, err := unix.Write(int(fd), pu.wb[pu.wn:])
		switch {
		case n > 0:
			pu.wn += n
		case err == unix.EINTR:
		case err == unix.EAGAIN:
			if !pu.h.wArmed { // set the write deadline before the wait
				pu.arm = true
			}
			return pu.arm
		case err == nil: // nothing written and no error
			pu.err = io.ErrShortWrite
			return true
		default:
			pu.err = err
			return true
		}
	}
	return true
}
