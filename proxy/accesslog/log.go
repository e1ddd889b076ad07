package accesslog

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Formats of the access log.
const (
	FormatJSON  = "json"
	FormatSquid = "squid"
)

// Stderr is the access_log value that logs to the server's own log.
const Stderr = "stderr"

// FileMode is the mode of a log file Sluice creates.
const FileMode = 0o640

// DefaultFlush is the longest a line waits in the buffer of a log file
// when the config does not say (access_log_flush). A second, as nginx's
// `flush=1s` and Squid's buffered logs: a crash (SIGKILL, power loss)
// loses at most the last second of lines; a clean stop, a reopen and a
// reload lose none. Under load the buffer fills sooner and is written
// then, so a shorter interval would buy nothing but wake-ups.
const DefaultFlush = time.Second

// Log writes access records in one format to stderr or a file. It is safe
// for concurrent use; Reopen and Configure may be called while records
// are written. The zero Log discards everything.
//
// Lines to a file are buffered (see file.go): a record costs no system
// call, the file gets one write(2) for many lines, and a file that cannot
// keep up (a full disk, a hung mount) loses lines, counted and reported
// on the server's log, rather than holding up the requests that log them.
type Log struct {
	// wmu is held while the file is written, switched or closed; it is
	// taken before mu, never after.
	wmu     sync.Mutex
	f       *os.File // under wmu
	failure failure  // under wmu: the file's write errors, reported

	mu     sync.Mutex
	path   string // "" or Stderr: the server's log
	format string
	every  time.Duration // the longest a line is buffered; 0: not buffered
	stderr *slog.Logger  // the server's log, for JSON to stderr and failures
	raw    io.Writer     // stderr's writer, for Squid lines to stderr
	json   *slog.Logger  // JSON to the file
	pend   pending       // lines not yet written, under mu

	lost atomic.Int64 // lines that never reached the file
}

// Open returns a Log writing format ("json" or "squid"; "" is json) to
// path ("" or "stderr": the server's log, else a file, created with mode
// 0640 if missing and appended to), buffering a file's lines for up to
// DefaultFlush. JSON access lines to stderr go through server (the
// server's own logger, so they look like today's), Squid lines straight
// to raw. Failures to write the file are reported through server.
func Open(path, format string, server *slog.Logger, raw io.Writer) (*Log, error) {
	l := New(server, raw)
	if err := l.Configure(path, format, 0); err != nil {
		return nil, err
	}
	return l, nil
}

// New returns a Log writing JSON lines through server, until Configure
// says otherwise.
func New(server *slog.Logger, raw io.Writer) *Log {
	return &Log{stderr: server, raw: raw, format: FormatJSON, every: DefaultFlush}
}

// Configure switches l to path and format (on reload), with a file's lines
// buffered for up to flush: zero means DefaultFlush, negative means none
// (each line written at once, one write(2) per line, on the caller's
// time). The lines logged before are written first, to the file they
// were logged for. On error l keeps writing where it did.
func (l *Log) Configure(path, format string, flush time.Duration) error {
	switch format {
	case "", FormatJSON:
		format = FormatJSON
	case FormatSquid:
	default:
		return fmt.Errorf("accesslog: unknown format %q (json or squid)", format)
	}
	if path == Stderr {
		path = ""
	}
	every := flush
	if flush == 0 {
		every = DefaultFlush
	} else if flush < 0 {
		every = 0
	}
	l.mu.Lock()
	if path == l.path && l.format != "" {
		// The same file: the lines buffered so far go to the writer,
		// not written here, so that a write that hangs (a hung mount)
		// holds up no reload. Turned unbuffered, the next line writes
		// those still queued before itself (line).
		l.format, l.every = format, every
		l.handOffLocked()
		l.mu.Unlock()
		return nil
	}
	l.mu.Unlock()
	if !l.lockWrite() {
		return fmt.Errorf("accesslog: %s: a write did not return within %v; still logging there", l.Path(), closeWait)
	}
	defer l.wmu.Unlock()
	l.mu.Lock()
	same := path == l.path && l.format != ""
	l.mu.Unlock()
	var f *os.File
	if !same && path != "" {
		var err error
		if f, err = openFile(path); err != nil {
			return err
		}
	}
	// Switch, and take the lines logged so far: they go to the old file,
	// the lines logged from now on to the new one.
	l.mu.Lock()
	q := l.takeLocked()
	l.format, l.every = format, every
	if !same {
		l.path = path
		l.json = nil
		if f != nil {
			l.json = slog.New(slog.NewJSONHandler(lockedFile{l}, nil))
		}
	}
	l.mu.Unlock()
	l.writeAll(q)
	if !same {
		if l.f != nil {
			l.f.Close()
		}
		l.f = f
		l.failure = failure{}
	}
	return nil
}

func openFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, FileMode)
	if err != nil {
		return nil, fmt.Errorf("accesslog: %w", err)
	}
	return f, nil
}

// Reopen closes the log file and opens path again: after logrotate moved
// it away, new lines go to a new file, and the lines logged before go to
// the old one. Logging to stderr, it does nothing. When the file cannot
// be opened, l keeps writing to the old one.
func (l *Log) Reopen() error {
	l.mu.Lock()
	path := l.path
	l.mu.Unlock()
	if path == "" {
		return nil
	}
	if !l.lockWrite() {
		return fmt.Errorf("accesslog: %s: a write did not return within %v; not reopened", path, closeWait)
	}
	defer l.wmu.Unlock()
	l.mu.Lock()
	path = l.path
	l.mu.Unlock()
	if path == "" {
		return nil
	}
	f, err := openFile(path)
	if err != nil {
		return err
	}
	l.mu.Lock()
	q := l.takeLocked()
	l.mu.Unlock()
	l.writeAll(q) // the lines logged so far go to the old file
	l.f.Close()
	l.f = f
	l.failure = failure{}
	return nil
}

// Lost returns how many lines never reached the file since l was made:
// dropped because the file could not keep up, or not written because it
// failed. Each loss is also reported on the server's log.
func (l *Log) Lost() int64 { return l.lost.Load() }

// Path returns the file written to, "" for stderr.
func (l *Log) Path() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.path
}

// closeWait is how long Close waits for a write in progress (a file on a
// hung mount) before it gives up the lines still buffered, and Reopen and
// Configure before they give up switching the file; a variable so that
// tests can shorten it.
var closeWait = 10 * time.Second

// lockWrite takes wmu, waiting at most closeWait for a write in progress;
// false when that write did not return (a hung mount), so that no
// rotation, reload or stop waits forever on the file. It waits in Lock
// (on a goroutine it can leave behind), not by polling TryLock, so that
// a writer kept busy by a steady load cannot take the lock back each
// time before a poll comes: sync.Mutex hands it to a waiter blocked for
// long.
func (l *Log) lockWrite() bool {
	if l.wmu.TryLock() {
		return true
	}
	got, quit := make(chan struct{}), make(chan struct{})
	go func() {
		l.wmu.Lock()
		select {
		case got <- struct{}{}: // the caller holds it now
		case <-quit: // the caller gave up
			l.wmu.Unlock()
		}
	}()
	t := time.NewTimer(closeWait)
	defer t.Stop()
	select {
	case <-got:
		return true
	case <-t.C:
		close(quit)
		return false
	}
}

// Close writes the buffered lines and closes the file (at shutdown, after
// the connections drained). Later records go nowhere. It returns the
// error of that last write, if any. When a write in progress does not
// return within closeWait (a hung mount), Close gives up: the lines still
// buffered are lost, counted and reported, so that a stop never hangs on
// the log.
func (l *Log) Close() error {
	if !l.lockWrite() {
		return l.abandon()
	}
	defer l.wmu.Unlock()
	l.mu.Lock()
	l.path, l.format, l.json, l.raw = "", "", nil, nil
	q := l.takeLocked()
	l.pend.stop()
	l.mu.Unlock()
	err := l.writeAll(q)
	if l.f != nil {
		if cerr := l.f.Close(); err == nil {
			err = cerr
		}
		l.f = nil
	}
	return err
}

// abandon closes l without writing its buffered lines, which a hung write
// holds up: they are counted lost and reported.
func (l *Log) abandon() error {
	l.mu.Lock()
	path := l.path
	l.path, l.format, l.json, l.raw = "", "", nil, nil
	var n int64
	for _, b := range l.takeLocked() {
		n += int64(bytes.Count(b, []byte{'\n'}))
	}
	l.pend.stop()
	l.mu.Unlock()
	l.lost.Add(n)
	err := fmt.Errorf("accesslog: %s: a write did not return within %v; %d buffered lines lost", path, closeWait, n)
	if l.stderr != nil {
		l.stderr.Error("access log: closing without the last lines: the file takes no more (a hung disk?)",
			"file", path, "lines", n, "waited", closeWait)
	}
	return err
}

// Write logs r.
func (l *Log) Write(r *Record) {
	if l == nil {
		return
	}
	l.mu.Lock()
	format, path, j, server, raw := l.format, l.path, l.json, l.stderr, l.raw
	l.mu.Unlock()
	switch {
	case format == FormatJSON && path == "":
		if server != nil {
			LogJSON(server, r)
		}
	case format == FormatJSON:
		if !writeJSON(lockedFile{l}, r, time.Now()) {
			LogJSON(j, r) // through lockedFile
		}
	case format == FormatSquid:
		bp := lineBufs.Get().(*[]byte)
		line := append(appendSquid((*bp)[:0], r), '\n')
		if path == "" {
			if raw != nil {
				raw.Write(line)
			}
		} else {
			lockedFile{l}.Write(line)
		}
		if cap(line) <= maxPooledLine {
			*bp = line
			lineBufs.Put(bp)
		}
	}
}

// lockedFile writes whole lines to l's current file, through its buffer.
type lockedFile struct{ l *Log }

func (w lockedFile) Write(p []byte) (int, error) {
	w.l.line(p)
	return len(p), nil
}
