//go:build unix

package dial

import (
	"net"
	"syscall"
)

// idleAlive reports whether an idle connection is still open and silent:
// a peek that does not wait finds nothing to read. A FIN, a reset or
// bytes the origin sent unasked all make it false.
func idleAlive(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return true // nothing to look at: the resend covers it
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	alive := false
	var b [1]byte
	err = rc.Read(func(fd uintptr) bool {
		_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		alive = err == syscall.EAGAIN || err == syscall.EWOULDBLOCK
		return true // never wait for readiness
	})
	return err == nil && alive
}
