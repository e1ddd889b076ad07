package relay

import (
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// pipe is a kernel pipe that splice(2) moves bytes through.
type pipe struct {
	r, w int
	size int   // its capacity in bytes (F_GETPIPE_SZ)
	idle int64 // unix nanoseconds when it went back to the pool
}

// Pipe sizes. The kernel charges a pipe's pages to its user, and once the
// user's pipes hold pipe-user-pages-soft pages (16,384 by default: 64
// MiB) it gives every new pipe of an unprivileged user 2 pages and refuses
// to enlarge any. So the process keeps its pipes within a budget of half
// that limit (see pipeBudget): a pipe is enlarged to pipeWant while the
// budget allows, is kept at the size it was made with (64 KiB) beyond
// that, and no pipe is made when even that would overrun the budget; a
// direction without a pipe copies through a buffer.
const (
	pipeWant = 1 << 20  // the size asked for (the default pipe-max-size)
	pipeMin  = 64 << 10 // a pipe the kernel made smaller is closed, not used
)

// Pipe pool limits. A pipe costs two fds and pins its pages, so the pool
// keeps few, and only for a while: a proxy that has gone quiet holds none.
const (
	maxFreePipes = 16
	pipeKeep     = 2 * time.Second
)

// pipeBudget is how many bytes of pipe the process holds at most, pooled
// or in use: half of pipe-user-pages-soft, so that the pipes of other
// processes of the same user still find room; a variable for tests.
var pipeBudget = budgetFor(readSysctl("/proc/sys/fs/pipe-user-pages-soft"))

// pipeAsk is the size a pipe is enlarged to: pipeWant, or pipe-max-size
// when that is smaller (an unprivileged process cannot exceed it).
var pipeAsk = askFor(readSysctl("/proc/sys/fs/pipe-max-size"))

// pipeBytes is the capacity of the open pipes, pooled or in use.
var pipeBytes atomic.Int64

// smallUntil is when newPipe tries again (unix nanoseconds) after the
// kernel made a pipe smaller than pipeMin: until then its user is over
// the limit, and a pipe made and closed for every read would be waste.
var smallUntil atomic.Int64

// smallPause is how long newPipe makes no pipe after a small one.
const smallPause = time.Second

// budgetFor returns the pipe budget for a pipe-user-pages-soft of soft
// pages (-1: unknown); 0 means no limit, and then the budget stands for
// the kernel memory pipes may pin: 64 pipes of 1 MiB.
func budgetFor(soft int64) int64 {
	if soft <= 0 {
		return 64 * pipeWant
	}
	return soft * int64(os.Getpagesize()) / 2
}

// askFor returns the size to enlarge pipes to for a pipe-max-size of
// limit bytes (-1: unknown).
func askFor(limit int64) int {
	if limit >= pipeMin && limit < pipeWant {
		return int(limit)
	}
	return pipeWant
}

// readSysctl returns the number in a /proc/sys file, or -1.
func readSysctl(path string) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return -1
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return -1
	}
	return n
}

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

// openPipe is pipe2(2) for newPipe; a variable so that tests can make the
// small pipes the kernel gives a user over pipe-user-pages-soft.
var openPipe = func(fds []int) error { return unix.Pipe2(fds, unix.O_CLOEXEC|unix.O_NONBLOCK) }

// getPipe returns an empty pipe from the pool or a new one, or nil when no
// pipe can be had (out of fds, over the budget, or the kernel made it too
// small).
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

// newPipe makes a non-blocking pipe within the budget: of pipeAsk bytes
// where the budget and the kernel allow it, else of the size the kernel
// made it with. It returns nil when the pipe cannot be made, would
// overrun the budget, or is smaller than pipeMin (its user is over
// pipe-user-pages-soft: then no pipe is tried for smallPause).
func newPipe() *pipe {
	if pipeBytes.Load()+pipeMin > pipeBudget || time.Now().UnixNano() < smallUntil.Load() {
		return nil
	}
	var fds [2]int
	if err := openPipe(fds[:]); err != nil {
		return nil
	}
	p := &pipe{r: fds[0], w: fds[1]}
	size, err := unix.FcntlInt(uintptr(p.r), unix.F_GETPIPE_SZ, 0)
	if err != nil || size < pipeMin {
		smallUntil.Store(time.Now().Add(smallPause).UnixNano())
		p.closeFDs()
		return nil
	}
	if pipeBytes.Add(int64(pipeAsk)) <= pipeBudget {
		if n, err := unix.FcntlInt(uintptr(p.r), unix.F_SETPIPE_SZ, pipeAsk); err == nil {
			size = n
		}
		pipeBytes.Add(int64(size - pipeAsk))
	} else if pipeBytes.Add(int64(size-pipeAsk)) > pipeBudget {
		pipeBytes.Add(int64(-size))
		p.closeFDs()
		return nil
	}
	p.size = size
	return p
}

// close closes the pipe and takes it off the budget.
func (p *pipe) close() {
	pipeBytes.Add(int64(-p.size))
	p.closeFDs()
}

func (p *pipe) closeFDs() {
	unix.Close(p.r)
	unix.Close(p.w)
}
