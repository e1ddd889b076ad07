package test

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// hungAccessLog starts Sluice logging to a FIFO that is open but never
// read (a hung mount) and logs until the log's queue overflows, so that
// its writer is stuck in a write(2).
func hungAccessLog(t *testing.T, extra string) (*proc, string) {
	t.Helper()
	dir := t.TempDir()
	fifo := filepath.Join(dir, "access.fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := os.OpenFile(fifo, os.O_RDONLY|syscall.O_NONBLOCK, 0) // open, never read: the pipe fills
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	o := newOrigin(t, false)
	p := startSluice(t, "default: allow\nhosts: {allowed.test: 127.0.0.1}\naccess_log: "+fifo+"\naccess_log_flush: 50ms\n"+extra, nil)
	proxyURL, _ := url.Parse("http://" + p.addr)
	client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}}
	defer client.CloseIdleConnections()
	long := strings.Repeat("x", 20<<10)
	for i := range 150 {
		resp, err := client.Get(fmt.Sprintf("http://allowed.test:%s/%d/%s", o.port, i, long))
		if err != nil {
			t.Fatalf("request %d while the log file takes nothing: %v", i, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	p.waitLog(t, `access log: lines dropped.*`+regexp.QuoteMeta(fifo))
	return p, fifo
}

// waitLogFor is waitLog with a longer bound: an access log write that hangs
// is given up after 10 s.
func waitLogFor(t *testing.T, p *proc, re string, d time.Duration) {
	t.Helper()
	rx := regexp.MustCompile(re)
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if rx.MatchString(p.Log()) {
			return
		}
	}
	t.Fatalf("log never matched %q within %v; log:\n%s", re, d, p.Log())
}

// stopWithin sends SIGTERM and fails the test unless the process exits
// within d (then it is killed).
func stopWithin(t *testing.T, p *proc, d time.Duration) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(d):
		p.cmd.Process.Kill()
		<-p.done
		t.Fatalf("sluice did not stop within %v of SIGTERM; log:\n%s", d, p.Log())
	}
}

// TestAccessLogHungReopen: SIGUSR1 while the access log's write hangs
// gives up after a while and says so, rather than waiting forever (which
// held the signal goroutine, so that a later SIGTERM never ended the
// process); the stop then still ends.
func TestAccessLogHungReopen(t *testing.T) {
	p, fifo := hungAccessLog(t, "")
	p.cmd.Process.Signal(syscall.SIGUSR1)
	waitLogFor(t, p, `SIGUSR1: cannot reopen the access log.*`+regexp.QuoteMeta(fifo), 30*time.Second)
	stopWithin(t, p, 30*time.Second)
}

// TestAccessLogHungReload: a reload while the access log's write hangs
// (same file) is done at once rather than waiting for the write; the stop then still ends.
func TestAccessLogHungReload(t *testing.T) {
	p, _ := hungAccessLog(t, "")
	p.cmd.Process.Signal(syscall.SIGHUP)
	waitLogFor(t, p, `rules reloaded`, 5*time.Second)
	stopWithin(t, p, 30*time.Second)
}

// TestAccessLogFlushShortenedOnReload: a reload that shortens
// access_log_flush (1h to 100ms, same file) applies to the lines logged
// after it at once; before, they waited for the timer armed with the old
// interval, up to an hour.
func TestAccessLogFlushShortenedOnReload(t *testing.T) {
	echo := newTCPEcho(t)
	p := startSluice(t, "default: allow\naccess_log: access.log\naccess_log_flush: 1h\n", nil)
	path := filepath.Join(p.dir, "access.log")
	if err := tunnelThrough(t, p.addr, echo.addr, "before"); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(p.dir, "sluice.yaml")
	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, []byte(strings.Replace(string(b), "access_log_flush: 1h", "access_log_flush: 100ms", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	p.cmd.Process.Signal(syscall.SIGHUP)
	waitLogFor(t, p, `rules reloaded`, 10*time.Second)
	// The file watcher reloads too: let the reloads settle, so that no
	// reload after the next line writes it.
	for n := -1; n != strings.Count(p.Log(), "rules reloaded"); time.Sleep(time.Second) {
		n = strings.Count(p.Log(), "rules reloaded")
	}
	if err := tunnelThrough(t, p.addr, echo.addr, "after"); err != nil {
		t.Fatal(err)
	}
	if lines := waitLines(t, path, 2); len(lines) != 2 {
		t.Fatalf("lines %q", lines)
	}
}
