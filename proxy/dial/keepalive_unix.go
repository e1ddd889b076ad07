//go:build unix

package dial

import (
	"net"
	"syscall"
)

// peeker looks at an idle connection without reading from it; made once
// per connection, so that a look allocates nothing.
type peeker struct {
	rc    syscall.RawConn // nil when the conn has none
	alive bool
	buf   [1]byte
	look  func(fd uintptr) bool
}

func newPeeker(c net.Conn) *peeker {
	p := &peeker{}
	if sc, ok := c.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			p.rc = rc
		}
	}
	p.look = func(fd uintptr) bool {
		_, _, err := syscall.Recvfrom(int(fd), p.buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		p.alive = err == syscall.EAGAIN || err == syscall.EWOULDBLOCK
		return true // never wait for readiness
	}
	return p
}

// idleAlive reports whether an idle connection is still open and silent:
// a peek that does not wait finds nothing to read. A FIN, a reset or
// bytes the origin sent unasked all make it false. A conn without a file
// descriptor counts as open (the resend covers a closed one).
func (p *peeker) idleAlive() bool {
	if p.rc == nil {
		return true
	}
	p.alive = false
	return p.rc.Read(p.look) == nil && p.alive
}
