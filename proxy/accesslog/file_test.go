package accesslog

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer safe for the log's writer goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func target(i int) *Record {
	return &Record{Start: start, Client: "127.0.0.1:1", Proto: "http", Method: "CONNECT",
		Target: fmt.Sprintf("t%d.test:443", i), Reply: -1}
}

// wholeLines fails unless b is whole Squid lines, and returns them.
func wholeLines(t *testing.T, b []byte) []string {
	t.Helper()
	if len(b) == 0 {
		return nil
	}
	if b[len(b)-1] != '\n' {
		t.Fatalf("the file ends in half a line: %.80q", b[max(0, len(b)-80):])
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	for _, l := range lines {
		if len(strings.Fields(l)) != 10 {
			t.Fatalf("a line cut or merged: %.120q", l)
		}
	}
	return lines
}

// TestFileUnbuffered: with flush negative (access_log_flush: off) each
// line is in the file when Write returns.
func TestFileUnbuffered(t *testing.T) {
	path := filepath.Join(t.TempDir(), "access.log")
	l := New(nil, nil)
	if err := l.Configure(path, FormatSquid, -1); err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for i := range 3 {
		l.Write(target(i))
		b, _ := os.ReadFile(path)
		if n := len(wholeLines(t, b)); n != i+1 {
			t.Fatalf("after line %d the file has %d lines, want them all at once", i+1, n)
		}
	}
}

// TestFileSwitchToBuffered: a reload from unbuffered to buffered (and
// back) keeps every line in order, the buffered ones written by the
// switch.
func TestFileSwitchToBuffered(t *testing.T) {
	path := filepath.Join(t.TempDir(), "access.log")
	l := New(nil, nil)
	if err := l.Configure(path, FormatSquid, time.Hour); err != nil {
		t.Fatal(err)
	}
	l.Write(target(0))
	if b, _ := os.ReadFile(path); len(b) != 0 {
		t.Fatalf("buffered for an hour, yet written: %q", b)
	}
	if err := l.Configure(path, FormatSquid, -1); err != nil {
		t.Fatal(err)
	}
	l.Write(target(1))
	b, _ := os.ReadFile(path)
	if lines := wholeLines(t, b); len(lines) != 2 || !strings.Contains(lines[0], "t0.test") || !strings.Contains(lines[1], "t1.test") {
		t.Fatalf("after the switch: %q", b)
	}
	l.Close()
}

// TestFileFullDisk: a file that cannot be written (/dev/full: ENOSPC)
// loses its lines, but says so on the server's log, with the file, the
// error and the count, and Close returns the error; Write never fails
// or blocks the caller.
func TestFileFullDisk(t *testing.T) {
	var server syncBuffer
	l, err := Open("/dev/full", FormatSquid, slog.New(slog.NewTextHandler(&server, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		l.Write(target(i))
	}
	if err := l.Close(); err == nil || !strings.Contains(err.Error(), "no space left") {
		t.Errorf("Close: %v, want the write error", err)
	}
	if l.Lost() != 5 {
		t.Errorf("Lost() = %d, want 5", l.Lost())
	}
	log := server.String()
	if !strings.Contains(log, "level=ERROR") || !strings.Contains(log, "cannot write the file") ||
		!strings.Contains(log, "file=/dev/full") || !strings.Contains(log, "no space left on device") ||
		!strings.Contains(log, "lines=5") {
		t.Errorf("server log:\n%s", log)
	}
}

// TestFileShortWriteCut: a write that stops short (here the file size
// limit, as a full disk would) leaves whole lines only: the part of a
// line written is cut off, the lines not written are counted.
func TestFileShortWriteCut(t *testing.T) {
	const limit = 1000
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "access.log")
	var server syncBuffer
	l := New(slog.New(slog.NewTextHandler(&server, nil)), nil)
	if err := l.Configure(path, FormatSquid, time.Hour); err != nil {
		t.Fatal(err)
	}
	const n = 40 // about 2,500 bytes
	for i := range n {
		l.Write(target(i))
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &syscall.Rlimit{Cur: limit, Max: old.Max}); err != nil {
		t.Fatal(err)
	}
	err := l.Close()
	syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old)
	if err == nil {
		t.Fatal("Close wrote past the file size limit")
	}
	b, _ := os.ReadFile(path)
	lines := wholeLines(t, b)
	if len(b) > limit || len(lines) == 0 || len(lines)+int(l.Lost()) != n {
		t.Errorf("%d bytes, %d whole lines, %d lost; want at most %d bytes and %d lines in all", len(b), len(lines), l.Lost(), limit, n)
	}
	if !strings.Contains(server.String(), fmt.Sprintf("lines=%d", n-len(lines))) {
		t.Errorf("server log:\n%s", server.String())
	}
}

// TestFileHungDrops: a file that takes no more (a FIFO nobody reads: a
// hung mount) never holds up Write: past the queue, lines are dropped,
// counted and reported; once the file moves again every line it got is
// whole, and the written and the lost add up.
func TestFileHungDrops(t *testing.T) {
	path, r := hungFIFO(t, t.TempDir())
	var server syncBuffer
	l := New(slog.New(slog.NewTextHandler(&server, nil)), nil)
	if err := l.Configure(path, FormatSquid, 10*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	// Lines of 40 KB: one per buffer. The pipe takes 64 KiB, the queue
	// 16 buffers: 60 lines are more than they hold.
	const n = 60
	long := strings.Repeat("x", 40<<10)
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		for i := range n {
			rec := target(i)
			rec.Target = fmt.Sprintf("t%d.test/%s", i, long)
			l.Write(rec)
		}
	}()
	select {
	case <-wrote:
	case <-time.After(20 * time.Second):
		t.Fatal("Write blocked on a file that takes no more")
	}
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(server.String(), "lines dropped") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if l.Lost() == 0 || !strings.Contains(server.String(), "lines dropped") {
		t.Fatalf("%d lost; server log:\n%s", l.Lost(), server.String())
	}
	if err := syscall.SetNonblock(int(r.Fd()), false); err != nil {
		t.Fatal(err)
	}
	got := make(chan []byte)
	go func() {
		var b bytes.Buffer
		b.ReadFrom(bufio.NewReader(r))
		got <- b.Bytes()
	}()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	b := <-got
	lines := wholeLines(t, b)
	if len(lines)+int(l.Lost()) != n {
		t.Errorf("%d lines read, %d lost: want %d in all", len(lines), l.Lost(), n)
	}
}

// TestFileSwitchWhileWriting: a reload that switches files while lines
// are logged sends each line to the file that was current when it was
// logged: per writer, the first lines are in the old file and the rest in
// the new, none lost, none twice, every line whole.
func TestFileSwitchWhileWriting(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.log"), filepath.Join(dir, "b.log")
	l := New(nil, nil)
	if err := l.Configure(a, FormatSquid, time.Hour); err != nil {
		t.Fatal(err)
	}
	const writers, each = 4, 3000
	var wg sync.WaitGroup
	var started sync.WaitGroup
	started.Add(writers)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				if i == each/10 {
					started.Done()
				}
				rec := target(i)
				rec.Target = fmt.Sprintf("w%d-%d.test:443", w, i)
				l.Write(rec)
			}
		})
	}
	started.Wait()
	if err := l.Configure(b, FormatSquid, time.Hour); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	next := make([]int, writers)
	for _, path := range []string{a, b} {
		data, _ := os.ReadFile(path)
		for _, line := range wholeLines(t, data) {
			var w, i int
			if _, err := fmt.Sscanf(strings.Fields(line)[6], "w%d-%d.test:443", &w, &i); err != nil || w >= writers || i != next[w] {
				t.Fatalf("%s: %q out of order (want w%d-%d)", filepath.Base(path), line, w, next[w])
			}
			next[w]++
		}
	}
	for w, n := range next {
		if n != each {
			t.Errorf("writer %d: %d lines in the two files, want %d", w, n, each)
		}
	}
}

// TestFileCloseHung: Close does not hang on a file whose write does not
// return (a FIFO nobody reads, as a hung mount): after closeWait it gives
// up the buffered lines, counts them lost and says so.
func TestFileCloseHung(t *testing.T) {
	shortCloseWait(t)
	path, r := hungFIFO(t, t.TempDir())
	var server syncBuffer
	l := New(slog.New(slog.NewTextHandler(&server, nil)), nil)
	if err := l.Configure(path, FormatSquid, time.Millisecond); err != nil {
		t.Fatal(err)
	}
	hangWriter(t, l)
	l.Write(target(99)) // buffered, behind the hung write
	closed := make(chan error, 1)
	go func() { closed <- l.Close() }()
	select {
	case err := <-closed:
		if err == nil || !strings.Contains(err.Error(), "lines lost") {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Close hung on a file that takes no more")
	}
	if l.Lost() == 0 || !strings.Contains(server.String(), "closing without the last lines") {
		t.Errorf("%d lost; server log:\n%s", l.Lost(), server.String())
	}
	// Unblock the writer: it ends, having nothing more to write.
	syscall.SetNonblock(int(r.Fd()), false)
	go io.Copy(io.Discard, r)
}

// TestFileReopenConfigureHung: while a write does not return (a FIFO
// nobody reads), Reopen and a Configure to another file give up after
// closeWait with an error, and a Configure that keeps the file does not
// wait at all: no rotation or reload hangs on the file.
func TestFileReopenConfigureHung(t *testing.T) {
	shortCloseWait(t)
	dir := t.TempDir()
	path, r := hungFIFO(t, dir)
	l := New(nil, nil)
	if err := l.Configure(path, FormatSquid, time.Millisecond); err != nil {
		t.Fatal(err)
	}
	hangWriter(t, l)
	within := func(what string, f func() error) error {
		t.Helper()
		done := make(chan error, 1)
		go func() { done <- f() }()
		select {
		case err := <-done:
			return err
		case <-time.After(20 * time.Second):
			t.Fatalf("%s hung on a file that takes no more", what)
			return nil
		}
	}
	if err := within("Reopen", l.Reopen); err == nil || !strings.Contains(err.Error(), "not reopened") {
		t.Errorf("Reopen: %v, want an error saying the file was not reopened", err)
	}
	if err := within("Configure, same file", func() error { return l.Configure(path, FormatJSON, time.Second) }); err != nil {
		t.Errorf("Configure to the same file: %v", err)
	}
	other := filepath.Join(dir, "other.log")
	if err := within("Configure, other file", func() error { return l.Configure(other, FormatSquid, time.Second) }); err == nil {
		t.Errorf("Configure to another file while the old one hangs: no error")
	}
	if got := l.Path(); got != path {
		t.Errorf("after the failed switch the log writes %q, want %q", got, path)
	}
	within("Close", l.Close)
	syscall.SetNonblock(int(r.Fd()), false)
	go io.Copy(io.Discard, r)
}

// TestFileFlushShortened: a reload that shortens the flush interval of
// the same file (1h to 20ms) applies to the next line at once, not after
// the timer armed with the old interval.
func TestFileFlushShortened(t *testing.T) {
	path := filepath.Join(t.TempDir(), "access.log")
	l := New(nil, nil)
	defer l.Close()
	if err := l.Configure(path, FormatSquid, time.Hour); err != nil {
		t.Fatal(err)
	}
	l.Write(target(0))
	if err := l.Configure(path, FormatSquid, 20*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	l.Write(target(1))
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		b, _ := os.ReadFile(path)
		if lines := wholeLines(t, b); len(lines) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("10 s after the switch to 20ms the file holds %q", b)
		}
	}
}

// TestFileReopenBusyWriter: a writer that takes the file's lock again as
// soon as it let it go (a steady load: the queue refills while it
// writes) does not keep a rotation out: Reopen gets the lock in its turn
// and reopens, rather than failing after closeWait as a poll that never
// found the lock free did.
func TestFileReopenBusyWriter(t *testing.T) {
	saved := closeWait
	closeWait = 3 * time.Second
	t.Cleanup(func() { closeWait = saved })
	path := filepath.Join(t.TempDir(), "access.log")
	l := New(nil, nil)
	if err := l.Configure(path, FormatSquid, time.Millisecond); err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	stop, busy := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { // as the writer: a write, then the next at once
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			l.wmu.Lock()
			if i == 0 {
				close(busy)
			}
			time.Sleep(time.Millisecond)
			l.wmu.Unlock()
		}
	})
	<-busy
	err := l.Reopen()
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatalf("Reopen beside a busy writer: %v", err)
	}
}

// TestFileNoSpinTurnedUnbuffered: a reload to access_log_flush: off while
// the queue is full (a hung file) leaves a buffer the timer cannot hand
// off; its retry waits, rather than re-arming with the new interval, 0,
// and firing without pause: a core's whole time while the file hangs.
// The process's CPU time (not the wall clock) over a second tells.
func TestFileNoSpinTurnedUnbuffered(t *testing.T) {
	shortCloseWait(t)
	path, r := hungFIFO(t, t.TempDir())
	l := New(nil, nil)
	if err := l.Configure(path, FormatSquid, time.Millisecond); err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("x", 40<<10)
	for i := 0; ; i++ { // until the queue is full behind the hung write
		rec := target(i)
		rec.Target = long
		l.Write(rec)
		l.mu.Lock()
		full := len(l.pend.queue) >= maxQueued
		l.mu.Unlock()
		if full {
			break
		}
		if i > 10000 {
			t.Fatal("the queue never filled")
		}
		time.Sleep(time.Millisecond)
	}
	l.Write(target(1)) // in the buffer, which the full queue cannot take
	if err := l.Configure(path, FormatSquid, -1); err != nil {
		t.Fatal(err)
	}
	cpu := func() time.Duration {
		var ru syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	c0 := cpu()
	time.Sleep(time.Second)
	if used := cpu() - c0; used > 300*time.Millisecond {
		t.Errorf("%v of CPU in the second after the switch: the timer spins", used)
	}
	l.Close()
	syscall.SetNonblock(int(r.Fd()), false)
	go io.Copy(io.Discard, r)
}

// hungFIFO makes a FIFO in dir whose read end is open (so that opening it
// to write does not wait) but never read: a file that takes 64 KiB and
// then hangs its writer, as a hung mount does. It returns its path and
// its read end.
func hungFIFO(t *testing.T, dir string) (string, *os.File) {
	t.Helper()
	path := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return path, r
}

// shortCloseWait makes Close, Reopen and Configure give up on a hung
// write after 100 ms for the rest of the test.
func shortCloseWait(t *testing.T) {
	saved := closeWait
	closeWait = 100 * time.Millisecond
	t.Cleanup(func() { closeWait = saved })
}

// hangWriter writes more lines to l than its hung FIFO takes and waits
// until l's writer hangs in write(2).
func hangWriter(t *testing.T, l *Log) {
	t.Helper()
	long := strings.Repeat("x", 40<<10)
	for i := range 10 {
		rec := target(i)
		rec.Target = long
		l.Write(rec)
	}
	deadline := time.Now().Add(20 * time.Second)
	for l.wmu.TryLock() {
		l.wmu.Unlock()
		if time.Now().After(deadline) {
			t.Fatal("the writer never blocked")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
