package relay

import (
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// pipe is a kernel pipe that splice(2) moves bytes through.
type pipe struct {
	r, w int
	idle int64 // unix nanoseconds when it went back to the pool
}

// Pipe pool limits. A pipe costs two fds, so the pool keeps few, and only
// for a while: a proxy that has gone quiet holds none.
const (
	maxFreePipes = 32
	pipeKeep     = 2 * time.Second
)

// pipes is the pool of empty pipes. Unlike a sync.Pool, which closes its
// pipes only when a garbage collection happens to run, it closes the pipes
// it does not keep at once, and those it kept once they were unused for
// pipeKeep.
var pipes struct {
	mu    sync.Mutex
	free  []*pipe // the most recently used last
	timer *time.Timer
}

// makePipe makes a new pipe; a variable so that tests can run out of pipes.
var makePipe = newPipe

// getPipe returns an empty pipe from the pool or a new one, or nil when no
// pipe can be made (out of fds).
func getPipe() *pipe {
	pipes.mu.Lock()
	if n := len(pipes.free); n > 0 {
		p := pipes.free[n-1]
		pipes.free[n-1] = nil
		pipes.free = pipes.free[:n-1]
		pipes.mu.Unlock()
		return p
	}
	pipes.mu.Unlock()
	return makePipe()
}

// putPipe returns an empty pipe to the pool.
func putPipe(p *pipe) {
	p.idle = time.Now().UnixNano()
	pipes.mu.Lock()
	if len(pipes.free) >= maxFreePipes {
		pipes.mu.Unlock()
		p.close()
		return
	}
	pipes.free = append(pipes.free, p)
	if pipes.timer == nil {
		pipes.timer = time.AfterFunc(pipeKeep, trimPipes)
	}
	pipes.mu.Unlock()
}

// trimPipes closes the pipes unused for pipeKeep, and runs again while
// the pool holds any.
func trimPipes() {
	cutoff := time.Now().Add(-pipeKeep).UnixNano()
	pipes.mu.Lock()
	var old []*pipe
	i := 0
	for i < len(pipes.free) && pipes.free[i].idle <= cutoff {
		i++
	}
	if i > 0 {
		old = append(old, pipes.free[:i]...)
		n := copy(pipes.free, pipes.free[i:])
		clear(pipes.free[n:])
		pipes.free = pipes.free[:n]
	}
	if len(pipes.free) > 0 {
		pipes.timer.Reset(pipeKeep)
	} else {
		pipes.timer = nil
	}
	pipes.mu.Unlock()
	for _, p := range old {
		p.close()
	}
}

// newPipe makes a non-blocking pipe of maxSplice bytes where the system
// allows it (pipe-max-size, pipe-user-pages-soft), else of its default size.
func newPipe() *pipe {
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil
	}
	unix.FcntlInt(uintptr(fds[0]), unix.F_SETPIPE_SZ, maxSplice)
	return &pipe{r: fds[0], w: fds[1]}
}

func (p *pipe) close() {
	unix.Close(p.r)
	unix.Close(p.w)
}
