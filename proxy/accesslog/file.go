package accesslog

import (
	"bytes"
	"io"
	"log/slog"
	"time"
)

// How a log file is written. Lines gather in a buffer of bufSize bytes
// under Log.mu, which costs a record no system call; the buffer goes to a
// queue when it is full or every (access_log_flush) after its first line,
// and a writer goroutine writes the queue under Log.wmu, one write(2) per
// buffer. Reopen, Configure and Close write the buffer and the queue
// before they switch or close the file, so that a rotation, a reload and a
// clean stop lose no line; a crash loses what was not yet written: at
// most the last `every` of lines.
//
// A line is never split: a line goes into one buffer whole, and a write
// that stops short (a full disk) is cut back to its last whole line. A
// file that cannot be written (a full disk, an unwritable device) loses
// its lines, counted and reported on the server's log; a file that
// cannot keep up (a hung mount) fills the queue, and then lines are
// dropped, counted and reported, rather than holding up the requests
// that log them.

// bufSize is the buffer of a log file, as nginx's `buffer=64k`.
const bufSize = 64 << 10

// maxQueued is how many full buffers may wait for the writer: 1 MiB of
// lines, some seconds of a busy proxy's, before lines are dropped.
const maxQueued = 16

// reportEvery is how often a failing file is reported while it fails.
const reportEvery = 10 * time.Second

// pending is what a Log holds of its file's lines not yet written. It is
// guarded by Log.mu.
type pending struct {
	buf     []byte   // the lines being gathered
	queue   [][]byte // full buffers for the writer, oldest first
	spare   [][]byte // written buffers, for reuse
	armed   bool     // timer runs: buf had a line since the last hand-off
	timer   *time.Timer
	running bool          // the writer goroutine runs
	kick    chan struct{} // the queue has work (capacity 1)
	quit    chan struct{} // closed to end the writer
	dropped int64         // lines dropped on a full queue, not yet reported
	told    time.Time     // when dropped lines were last reported
}

// line writes p, one or more whole lines, to l's file: into the buffer,
// or at once when l is not buffered.
func (l *Log) line(p []byte) {
	l.mu.Lock()
	if l.path == "" {
		l.mu.Unlock()
		return
	}
	if l.every == 0 {
		l.mu.Unlock()
		l.wmu.Lock()
		// Lines buffered before a reload turned the buffer off go first.
		l.mu.Lock()
		q := l.takeLocked()
		l.mu.Unlock()
		if len(q) > 0 {
			l.writeAll(q)
		}
		l.writeLocked(p)
		l.wmu.Unlock()
		return
	}
	defer l.mu.Unlock()
	pd := &l.pend
	if len(pd.buf)+len(p) > bufSize && len(pd.buf) > 0 && !l.handOffLocked() {
		pd.dropped++ // the writer is behind by maxQueued buffers
		l.lost.Add(1)
		return
	}
	if len(p) > bufSize { // longer than a buffer: a buffer of its own
		if len(pd.queue) >= maxQueued {
			pd.dropped++
			l.lost.Add(1)
			return
		}
		pd.queue = append(pd.queue, bytes.Clone(p))
		l.kickLocked()
		return
	}
	if pd.buf == nil {
		if n := len(pd.spare); n > 0 {
			pd.buf, pd.spare = pd.spare[n-1], pd.spare[:n-1]
		} else {
			pd.buf = make([]byte, 0, bufSize)
		}
	}
	pd.buf = append(pd.buf, p...)
	if !pd.armed {
		pd.armed = true
		if pd.timer == nil {
			pd.timer = time.AfterFunc(l.every, l.tick)
		} else {
			pd.timer.Reset(l.every)
		}
	}
}

// handOffLocked queues the buffer for the writer; false when the queue
// is full.
func (l *Log) handOffLocked() bool {
	pd := &l.pend
	if len(pd.buf) == 0 {
		return true
	}
	if len(pd.queue) >= maxQueued {
		return false
	}
	pd.queue = append(pd.queue, pd.buf)
	pd.buf = nil
	pd.disarm()
	l.kickLocked()
	return true
}

// disarm stops the timer of a buffer that was handed off: the next line
// starts it again with the interval then configured. (A timer left to
// run would flush the next buffer at the time of the previous one's
// first line, which a reload from 1h to 1s made up to an hour late.)
func (pd *pending) disarm() {
	if pd.armed {
		pd.timer.Stop()
		pd.armed = false
	}
}

// kickLocked wakes the writer, starting it on the first call.
func (l *Log) kickLocked() {
	pd := &l.pend
	if !pd.running {
		if l.path == "" {
			return // closed or switched to stderr: takeLocked took the lines
		}
		pd.running = true
		pd.kick, pd.quit = make(chan struct{}, 1), make(chan struct{})
		go l.writer(pd.kick, pd.quit)
	}
	select {
	case pd.kick <- struct{}{}:
	default:
	}
}

// stop ends the writer and the timer (Close), under l.mu.
func (pd *pending) stop() {
	if pd.running {
		close(pd.quit)
		pd.running = false
	}
	if pd.timer != nil {
		pd.timer.Stop()
	}
	pd.armed = false
}

// writer writes the queue whenever it is kicked, until quit.
func (l *Log) writer(kick, quit <-chan struct{}) {
	for {
		select {
		case <-kick:
			l.wmu.Lock()
			l.drainLocked()
			l.wmu.Unlock()
		case <-quit:
			return
		}
	}
}

// tick hands the buffer to the writer, every after its first line. While
// the queue is full it tries again every later, and reports the dropped
// lines at most every reportEvery.
func (l *Log) tick() {
	l.mu.Lock()
	pd := &l.pend
	pd.armed = false
	if !l.handOffLocked() && l.path != "" {
		// Turned unbuffered (every 0) meanwhile, the next line writes
		// the buffer; the retry still waits, rather than firing at once
		// again and again while the queue stays full.
		retry := l.every
		if retry <= 0 {
			retry = DefaultFlush
		}
		pd.armed = true
		pd.timer.Reset(retry)
	}
	n := l.takeDroppedLocked(false)
	path := l.path
	l.mu.Unlock()
	l.reportDropped(path, n)
}

// takeDroppedLocked returns the dropped lines to report now: all of them
// when force or when the last report is reportEvery old, else none.
func (l *Log) takeDroppedLocked(force bool) int64 {
	pd := &l.pend
	if pd.dropped == 0 || !force && time.Since(pd.told) < reportEvery {
		return 0
	}
	n := pd.dropped
	pd.dropped, pd.told = 0, time.Now()
	return n
}

func (l *Log) reportDropped(path string, n int64) {
	if n > 0 && l.stderr != nil {
		l.stderr.Error("access log: lines dropped: the file is not written as fast as they come (a hung or slow disk?)",
			"file", path, "lines", n)
	}
}

// takeLocked takes the buffer and the queue, oldest first: every line
// logged so far, for the file it was logged for (under l.mu).
func (l *Log) takeLocked() [][]byte {
	pd := &l.pend
	if len(pd.buf) > 0 {
		pd.queue = append(pd.queue, pd.buf) // past maxQueued: this once
		pd.buf = nil
	}
	pd.disarm()
	q := pd.queue
	pd.queue = nil
	return q
}

// drainLocked writes the queue under l.wmu, until it is empty (the
// writer goroutine).
func (l *Log) drainLocked() {
	for {
		l.mu.Lock()
		q := l.pend.queue
		l.pend.queue = nil
		l.mu.Unlock()
		if len(q) == 0 {
			return
		}
		l.writeAll(q)
	}
}

// writeAll writes q, oldest first, to the file under l.wmu, reports the
// lines dropped on a full queue, and returns the first write error.
func (l *Log) writeAll(q [][]byte) error {
	var first error
	for i, b := range q {
		if err := l.writeLocked(b); err != nil && first == nil {
			first = err
		}
		q[i] = nil
		if cap(b) == bufSize {
			l.mu.Lock()
			if len(l.pend.spare) < 2 {
				l.pend.spare = append(l.pend.spare, b[:0])
			}
			l.mu.Unlock()
		}
	}
	l.mu.Lock()
	n := l.takeDroppedLocked(true)
	l.mu.Unlock()
	if n > 0 && l.f != nil {
		l.reportDropped(l.f.Name(), n)
	}
	return first
}

// writeLocked writes b, whole lines, to the file, under l.wmu. A write
// that stops short is cut back to its last whole line; the lines not
// written are counted and reported.
func (l *Log) writeLocked(b []byte) error {
	f := l.f
	if f == nil {
		return nil
	}
	n, err := f.Write(b)
	if err == nil {
		l.failure.ok(l.stderr, f.Name())
		return nil
	}
	if part := n - (bytes.LastIndexByte(b[:n], '\n') + 1); part > 0 {
		// Never half a line in the file: the next line would be glued to it.
		end, serr := f.Seek(0, io.SeekCurrent)
		if serr == nil {
			serr = f.Truncate(end - int64(part))
		}
		if serr != nil && l.stderr != nil {
			l.stderr.Error("access log: cannot remove a partly written line", "file", f.Name(), "err", serr)
		}
		n -= part
	}
	lost := int64(bytes.Count(b[n:], []byte{'\n'}))
	l.lost.Add(lost)
	l.failure.fail(l.stderr, f.Name(), err, lost)
	return err
}

// failure follows a file's write errors, so that they are reported when
// they start, every reportEvery while they last, and when they end.
type failure struct {
	since time.Time // the first failed write; zero when the last succeeded
	told  time.Time // the last report
	lost  int64     // lines lost since the last report
	total int64     // lines lost since since
}

func (fl *failure) fail(log *slog.Logger, file string, err error, lost int64) {
	now := time.Now()
	fl.lost += lost
	fl.total += lost
	first := fl.since.IsZero()
	if first {
		fl.since = now
	} else if now.Sub(fl.told) < reportEvery {
		return
	}
	if log != nil {
		msg := "access log: cannot write the file; access lines are lost until it can be written"
		if !first {
			msg = "access log: still cannot write the file"
		}
		log.Error(msg, "file", file, "err", err, "lines", fl.lost)
	}
	fl.told, fl.lost = now, 0
}

func (fl *failure) ok(log *slog.Logger, file string) {
	if fl.since.IsZero() {
		return
	}
	if log != nil {
		log.Warn("access log: the file is written again", "file", file,
			"lines_lost", fl.total, "for", time.Since(fl.since).Round(time.Millisecond))
	}
	*fl = failure{}
}
