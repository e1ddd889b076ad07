package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// opTimeout bounds every step of one operation (a dial, a handshake, a
// request): a proxy that stops answering fails the operation, never hangs
// the harness.
const opTimeout = 10 * time.Second

// env is what every load needs: the options and the origins.
type env struct {
	o    *options
	http *origin // the 1 KiB HTTP origin
	bulk *origin // sink and source
	echo *origin // the far end of idle tunnels
}

// phase is the outcome of one bounded run of one load against one target
// (or direct).
type phase struct {
	ops      int64         // operations that succeeded, bytes checked
	errs     int64         // operations that failed
	mismatch int64         // operations that got bytes the origin did not send
	elapsed  time.Duration // from the first operation to the last
	cpu      float64       // the proxy's CPU seconds over the phase; -1 unknown
	accepts  int64         // connections the origin accepted meanwhile
	firstErr error
}

// plus adds q's figures to p's: two runs of the same load and target.
func (p phase) plus(q phase) phase {
	p.ops += q.ops
	p.errs += q.errs
	p.mismatch += q.mismatch
	p.elapsed += q.elapsed
	p.accepts += q.accepts
	if p.cpu < 0 || q.cpu < 0 {
		p.cpu = -1
	} else {
		p.cpu += q.cpu
	}
	if p.firstErr == nil {
		p.firstErr = q.firstErr
	}
	return p
}

// abba runs a, b, b, a (b, a, a, b in odd rounds) and returns a's and
// b's sums: a drift of the machine's load within the round weighs on both
// alike, and so does whatever slows the first phase of a round.
func abba(round int, a, b func() phase) (pa, pb phase) {
	if round%2 == 1 {
		pb, pa = abba(0, b, a)
		return pa, pb
	}
	pa, pb = a(), b()
	pb = pb.plus(b())
	pa = pa.plus(a())
	return pa, pb
}

func (p phase) rate() float64 {
	if p.elapsed <= 0 {
		return 0
	}
	return float64(p.ops) / p.elapsed.Seconds()
}

// worker is one client's loop body: op does one operation; done releases
// what the worker holds.
type worker struct {
	op   func(buf []byte) error
	done func()
}

// runPhase runs workers until count operations were started or dur
// passed, whichever comes first, and measures pid's CPU meanwhile. A
// worker that fails 20 times in a row stops.
func (e *env) runPhase(ctx context.Context, pid int, newWorker func() worker, dur time.Duration, count int) phase {
	var started, ok, errs, mismatch atomic.Int64
	var mu sync.Mutex
	var firstErr error
	cpu0, cerr := cpuSeconds(pid)
	accepts0 := e.http.accepts.Load()
	t0 := time.Now()
	deadline := t0.Add(dur)
	var wg sync.WaitGroup
	for range e.o.workers {
		wg.Go(func() {
			w := newWorker()
			defer w.done()
			buf := make([]byte, 4096)
			fails := 0
			for started.Add(1) <= int64(count) && time.Now().Before(deadline) && ctx.Err() == nil && fails < 20 {
				err := w.op(buf)
				if err == nil {
					ok.Add(1)
					fails = 0
					continue
				}
				errs.Add(1)
				fails++
				if errors.Is(err, errMismatch) {
					mismatch.Add(1)
				}
				mu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
	wg.Wait()
	p := phase{ops: ok.Load(), errs: errs.Load(), mismatch: mismatch.Load(), elapsed: time.Since(t0), cpu: -1,
		accepts: e.http.accepts.Load() - accepts0, firstErr: firstErr}
	if cpu1, err := cpuSeconds(pid); err == nil && cerr == nil {
		p.cpu = cpu1 - cpu0
	}
	return p
}

// tunnelGet is load 1 and 2: a new connection (a tunnel through the proxy,
// or straight to the origin), one GET of 1 KiB with Connection: close, the
// origin's close read to the end, then close. The GET's Host is a name, so
// a proxy that sniffs tunnels to IP literals decides on it.
func (e *env) tunnelGet(v via, proxy string) func() worker {
	return func() worker {
		return worker{done: func() {}, op: func(buf []byte) error {
			c, err := open(v, proxy, e.http.addr, opTimeout)
			if err != nil {
				return err
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(opTimeout))
			if _, err := get(c, "/", "origin.bench.test", true, buf); err != nil {
				return err
			}
			n, err := io.Copy(io.Discard, c.br)
			if err != nil {
				return err
			}
			if n != 0 {
				return fmt.Errorf("%w: %d bytes after the response", errMismatch, n)
			}
			return nil
		}}
	}
}

// keepAlive is load 3: each worker keeps one connection and sends GETs on
// it, absolute-URI through the proxy, origin-form when direct or through a
// TCP forwarder (forward: proxy is the forwarder's port to the origin); it
// reconnects when the connection is closed.
func (e *env) keepAlive(proxy string, forward bool) func() worker {
	target := "/k"
	if proxy != "" && !forward {
		target = "http://" + e.http.addr + "/k"
	}
	return func() worker {
		var c *conn
		w := worker{}
		w.done = func() {
			if c != nil {
				c.Close()
			}
		}
		w.op = func(buf []byte) error {
			if c == nil {
				addr := e.http.addr
				if proxy != "" {
					addr = proxy
				}
				var err error
				if c, err = open(viaDirect, "", addr, opTimeout); err != nil {
					return err
				}
			}
			c.SetDeadline(time.Now().Add(opTimeout))
			closing, err := get(c, target, e.http.addr, false, buf)
			if err != nil || closing {
				c.Close()
				c = nil
			}
			return err
		}
		return w
	}
}

// transfer is load 4 in one direction: one tunnel (already open, not timed)
// that carries n bytes up to the sink or down from the source. It returns
// MB/s (10^6 bytes) and the proxy's CPU seconds over the transfer; the
// bytes are checked with crc32c on both ends.
func (e *env) transfer(v via, proxy string, pid int, up bool, n int64) (mbps, cpu float64, err error) {
	c, err := open(v, proxy, e.bulk.addr, opTimeout)
	if err != nil {
		return 0, -1, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(e.o.bulkTimeout))
	var hdr [9]byte
	hdr[0] = cmdDown
	if up {
		hdr[0] = cmdUp
	}
	binary.BigEndian.PutUint64(hdr[1:], uint64(n))
	cpu0, cerr := cpuSeconds(pid)
	t0 := time.Now()
	if _, err := c.Write(hdr[:]); err != nil {
		return 0, -1, err
	}
	if up {
		sent, err := writeStream(c.Conn, n)
		if err != nil {
			return 0, -1, err
		}
		var reply [12]byte
		if _, err := io.ReadFull(c.br, reply[:]); err != nil {
			return 0, -1, fmt.Errorf("sink's reply: %w", err)
		}
		got, crc := int64(binary.BigEndian.Uint64(reply[:])), binary.BigEndian.Uint32(reply[8:])
		if got != n || crc != sent {
			return 0, -1, fmt.Errorf("%w: the sink got %d bytes (crc %08x), %d were sent (crc %08x)", errMismatch, got, crc, n, sent)
		}
	} else {
		crc, err := readStream(c.br, n)
		if err != nil {
			return 0, -1, err
		}
		var trailer [4]byte
		if _, err := io.ReadFull(c.br, trailer[:]); err != nil {
			return 0, -1, fmt.Errorf("source's checksum: %w", err)
		}
		if sent := binary.BigEndian.Uint32(trailer[:]); sent != crc {
			return 0, -1, fmt.Errorf("%w: crc %08x received, %08x sent", errMismatch, crc, sent)
		}
	}
	el := time.Since(t0)
	cpu = -1
	if cpu1, err := cpuSeconds(pid); err == nil && cerr == nil {
		cpu = cpu1 - cpu0
	}
	if !up {
		if extra, _ := io.Copy(io.Discard, c.br); extra != 0 {
			return 0, -1, fmt.Errorf("%w: %d bytes after the stream", errMismatch, extra)
		}
	}
	return float64(n) / el.Seconds() / 1e6, cpu, nil
}

// idleResult is load 6 for one target and one protocol.
type idleResult struct {
	Wanted int     `json:"wanted"`
	Held   int     `json:"held"`   // tunnels open and still echoing once measured
	KiB    float64 `json:"kib"`    // resident KiB per held tunnel
	FDs    float64 `json:"fds"`    // file descriptors per held tunnel
	RSS0   int64   `json:"rss0"`   // KiB before
	RSS1   int64   `json:"rss1"`   // KiB with the tunnels held
	FD0    int     `json:"fd0"`    // fds before
	FD1    int     `json:"fd1"`    // fds with the tunnels held
	Failed int     `json:"failed"` // tunnels that could not be opened
	Error  string  `json:"error,omitempty"`
}

// idle is load 6: it opens up to n tunnels to the echo origin, each moving
// a few bytes each way, lets them idle for o.idleSettle, and measures the
// proxy's memory and fds against what it held before; then it checks
// which tunnels still echo and closes them all.
func (e *env) idle(ctx context.Context, v via, proxy string, pid int, n int) idleResult {
	r := idleResult{Wanted: n}
	var err error
	if r.RSS0, r.FD0, err = memFDs(pid); err != nil {
		r.Error = err.Error()
		return r
	}
	conns := make([]*conn, n)
	var next, failed, streak atomic.Int64
	deadline := time.Now().Add(e.o.idleTime)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for range 16 {
		wg.Go(func() {
			for ctx.Err() == nil && time.Now().Before(deadline) && streak.Load() < 20 {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				c, err := open(v, proxy, e.echo.addr, 5*time.Second)
				if err == nil {
					c.SetDeadline(time.Now().Add(5 * time.Second))
					if _, err = c.Write([]byte{cmdEcho, 'p', 'i', 'n', 'g'}); err == nil {
						err = expectEcho(c, "\x03ping")
					}
					c.SetDeadline(time.Time{})
					if err != nil {
						c.Close()
					}
				}
				if err != nil {
					failed.Add(1)
					streak.Add(1)
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					continue
				}
				streak.Store(0)
				conns[i] = c
			}
		})
	}
	wg.Wait()
	r.Failed = int(failed.Load())
	if firstErr != nil {
		r.Error = firstErr.Error()
	}
	time.Sleep(e.o.idleSettle)
	r.RSS1, r.FD1, _ = memFDs(pid)
	// Which tunnels still carry bytes: those are the ones held.
	var held atomic.Int64
	var next2 atomic.Int64
	for range 16 {
		wg.Go(func() {
			for {
				i := next2.Add(1) - 1
				if i >= int64(n) {
					return
				}
				c := conns[i]
				if c == nil {
					continue
				}
				c.SetDeadline(time.Now().Add(5 * time.Second))
				if _, err := c.Write([]byte("pong")); err == nil && expectEcho(c, "pong") == nil {
					held.Add(1)
				}
			}
		})
	}
	wg.Wait()
	// The origin closes first, then the proxy, then the client: no
	// TIME_WAIT on an ephemeral port (18,000 of them for 9,000 tunnels
	// would take most of the machine's ports for a minute).
	e.echo.closeConns()
	end := time.Now().Add(10 * time.Second) // for all of them together
	for _, c := range conns {
		if c != nil {
			c.SetDeadline(end)
			io.Copy(io.Discard, c.br)
			c.Close()
		}
	}
	r.Held = int(held.Load())
	if r.Held > 0 {
		r.KiB = float64(r.RSS1-r.RSS0) / float64(r.Held)
		r.FDs = float64(r.FD1-r.FD0) / float64(r.Held)
	}
	return r
}

// waitFDs waits up to limit for pid's fds to fall back to about fd0, once
// idle tunnels are closed, so that what follows starts from a clean count.
func waitFDs(pid, fd0 int, limit time.Duration) {
	for end := time.Now().Add(limit); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if _, fds, err := memFDs(pid); err != nil || fds <= fd0+8 {
			return
		}
	}
}

func expectEcho(c *conn, want string) error {
	b := make([]byte, len(want))
	if _, err := io.ReadFull(c.br, b); err != nil {
		return err
	}
	if string(b) != want {
		return fmt.Errorf("%w: echo %q, want %q", errMismatch, b, want)
	}
	return nil
}
