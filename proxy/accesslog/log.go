package accesslog

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
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

// bufSize is the buffer of a log file. Lines to a file are written
// together: flushAfter after the first of them, when the buffer is full,
// and before the file is switched, reopened or closed; one write(2) for
// many lines rather than one each. A line is never split between writes.
const bufSize = 64 << 10

// flushAfter is how long a line may wait in the buffer; a variable so
// that tests can hold lines there.
var flushAfter = 100 * time.Millisecond

// Log writes access records in one format to stderr or a file. It is safe
// for concurrent use; Reopen and Configure may be called while records
// are written. The zero Log discards everything.
type Log struct {
	mu     sync.Mutex
	path   string // "" or Stderr: the server's log
	format string
	f      *os.File
	buf    *bufio.Writer // lines not yet written to f
	armed  bool          // a flush is scheduled
	stderr *slog.Logger  // the server's log, for JSON to stderr
	raw    io.Writer     // stderr's writer, for Squid lines to stderr
	json   *slog.Logger  // JSON to the file
}

// Open returns a Log writing format ("json" or "squid"; "" is json) to
// path ("" or "stderr": the server's log, else a file, created with mode
// 0640 if missing and appended to). JSON access lines to stderr go
// through server (the server's own logger, so they look like today's),
// Squid lines straight to raw.
func Open(path, format string, server *slog.Logger, raw io.Writer) (*Log, error) {
	l := New(server, raw)
	if err := l.Configure(path, format); err != nil {
		return nil, err
	}
	return l, nil
}

// New returns a Log writing JSON lines through server, until Configure
// says otherwise.
func New(server *slog.Logger, raw io.Writer) *Log {
	return &Log{stderr: server, raw: raw, format: FormatJSON}
}

// Configure switches l to path and format (on reload). On error l keeps
// writing where it did.
func (l *Log) Configure(path, format string) error {
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
	l.mu.Lock()
	defer l.mu.Unlock()
	if path == l.path && l.format != "" {
		l.format = format
		return nil
	}
	var f *os.File
	if path != "" {
		var err error
		if f, err = openFile(path); err != nil {
			return err
		}
	}
	if l.f != nil {
		l.flushLocked()
		l.f.Close()
	}
	l.path, l.format, l.f = path, format, f
	if f != nil {
		l.buf = bufio.NewWriterSize(f, bufSize)
	}
	l.json = nil
	if f != nil {
		l.json = slog.New(slog.NewJSONHandler(lockedFile{l}, nil))
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
// it away, new lines go to a new file. Logging to stderr, it does nothing.
// When the file cannot be opened, l keeps writing to the old one.
func (l *Log) Reopen() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.path == "" {
		return nil
	}
	f, err := openFile(l.path)
	if err != nil {
		return err
	}
	l.flushLocked() // the lines logged so far go to the old file
	l.f.Close()
	l.f = f
	l.buf.Reset(f)
	return nil
}

// Path returns the file written to, "" for stderr.
func (l *Log) Path() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.path
}

// Close closes the file. Later records go nowhere.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var err error
	if l.f != nil {
		err = l.flushLocked()
		if cerr := l.f.Close(); err == nil {
			err = cerr
		}
		l.f = nil
	}
	l.path, l.format, l.json, l.stderr, l.raw = "", "", nil, nil, nil
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
		line := Squid(r) + "\n"
		if path == "" {
			if raw != nil {
				io.WriteString(raw, line)
			}
			return
		}
		lockedFile{l}.Write([]byte(line))
	}
}

// lockedFile writes whole lines to l's current file, through its buffer.
type lockedFile struct{ l *Log }

func (w lockedFile) Write(p []byte) (int, error) {
	l := w.l
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return len(p), nil
	}
	if len(p) > l.buf.Available() && l.buf.Buffered() > 0 {
		l.flushLocked() // so that p goes out whole, in one write
	}
	if len(p) > l.buf.Available() { // longer than the buffer
		return l.f.Write(p)
	}
	l.buf.Write(p)
	if !l.armed {
		l.armed = true
		time.AfterFunc(flushAfter, l.flush)
	}
	return len(p), nil
}

// flush writes the buffered lines; it runs flushAfter after the first.
func (l *Log) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.armed = false
	if l.f != nil {
		l.flushLocked()
	}
}

// flushLocked writes the buffered lines to l.f. On a failure (a full
// disk) the lines are dropped, as an unbuffered write would have dropped
// them, and the buffer takes new ones again.
func (l *Log) flushLocked() error {
	if l.buf == nil || l.buf.Buffered() == 0 {
		return nil
	}
	err := l.buf.Flush()
	if err != nil {
		l.buf.Reset(l.f)
	}
	return err
}
