package server

import (
	"errors"
	"net"
	"os"
	"syscall"
)

// ListenError is a listener that could not be opened at start-up. Its
// message says it once, in the admin's words, with a hint when there is an
// obvious cause: "cannot listen on 127.0.0.1:3128: address already in use
// (is another sluice running?)", instead of Go's "listen tcp
// 127.0.0.1:3128: bind: address already in use".
type ListenError struct {
	// What names the listener: "", "transparent" or "admin".
	What string
	// Addr is the configured address.
	Addr string
	// Err is the system's reason (such as syscall.EADDRINUSE).
	Err error
}

func (e *ListenError) Error() string {
	s := "server: cannot listen on " + e.Addr
	if e.What != "" {
		s = "server: " + e.What + ": cannot listen on " + e.Addr
	}
	s += ": " + e.Err.Error()
	switch {
	case errors.Is(e.Err, syscall.EADDRINUSE):
		s += " (is another sluice running?)"
	case errors.Is(e.Err, syscall.EACCES):
		s += " (a port below 1024 needs root or CAP_NET_BIND_SERVICE)"
	case errors.Is(e.Err, syscall.EADDRNOTAVAIL):
		s += " (no interface of this machine has that address)"
	}
	return s
}

// Unwrap returns the system's reason.
func (e *ListenError) Unwrap() error { return e.Err }

// listenError strips the repetitions of Go's *net.OpError (the operation,
// the address, the system call) from a failed net.Listen on addr.
func listenError(what, addr string, err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) {
		err = oe.Err
	}
	var se *os.SyscallError
	if errors.As(err, &se) {
		err = se.Err
	}
	var ae *net.AddrError
	if errors.As(err, &ae) {
		err = errors.New(ae.Err)
	}
	return &ListenError{What: what, Addr: addr, Err: err}
}
