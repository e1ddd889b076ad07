package test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// loadgenConfig is the config the load harness runs Sluice with
// (test/loadgen/peers/sluice.yaml, access lines to DIR/access.log with the
// default buffer) on a free port.
func loadgenConfig(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("loadgen/peers/sluice.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s := strings.ReplaceAll(string(b), "@PORT@", "0")
	return strings.ReplaceAll(s, "@DIR@/", "")
}

// tunnelThrough opens a CONNECT tunnel to echo through the proxy, echoes
// msg and closes it, waiting for the proxy's end of the tunnel. msg starts
// with a zero byte, which no sniffer reads as TLS or HTTP: the tunnel to an
// IP literal carries it at once.
func tunnelThrough(t *testing.T, proxy, echo, msg string) error {
	msg = "\x00" + msg
	c, err := net.DialTimeout("tcp", proxy, 10*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", echo, echo)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		return err
	}
	if resp.StatusCode != 200 {
		return fmt.Errorf("CONNECT: %s", resp.Status)
	}
	c.Write([]byte(msg))
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(br, got); err != nil || string(got) != msg {
		return fmt.Errorf("echo %q: %v", got, err)
	}
	c.(*net.TCPConn).CloseWrite()
	if _, err := br.ReadByte(); err != io.EOF {
		return fmt.Errorf("after the echo: %v, want EOF", err)
	}
	return nil
}

// jsonAccessLines reads path and checks that each line is a whole JSON
// access line; it returns the targets.
func jsonAccessLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) == 0 {
		return nil
	}
	if b[len(b)-1] != '\n' {
		t.Fatalf("%s ends in half a line", path)
	}
	var targets []string
	for _, l := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		var m struct{ Msg, Target string }
		if err := json.Unmarshal([]byte(l), &m); err != nil || m.Msg != "access" {
			t.Fatalf("not a whole access line (%v): %.200q", err, l)
		}
		targets = append(targets, m.Target)
	}
	return targets
}

// TestAccessLogBufferCleanStop runs the load harness's config (default
// buffer) under concurrent tunnels and stops it with SIGTERM at once:
// every tunnel's line is in the file, whole, after the exit.
func TestAccessLogBufferCleanStop(t *testing.T) {
	const workers, each = 8, 40
	p := startSluice(t, loadgenConfig(t), nil)
	echo := newTCPEcho(t)
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				if err := tunnelThrough(t, p.addr, echo.addr, fmt.Sprintf("w%d-%d", w, i)); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// One SIGTERM, then wait: p.stop's SIGINT after it would be a second
	// signal, which kills at once (without the buffered lines), so that
	// the test failed when it came after the shutdown began.
	stopWithin(t, p, 30*time.Second)
	if n := len(jsonAccessLines(t, filepath.Join(p.dir, "access.log"))); n != workers*each {
		t.Fatalf("%d access lines after SIGTERM, want %d", n, workers*each)
	}
}

// TestAccessLogFlushInterval: lines wait in the buffer for at most
// access_log_flush while the proxy runs: with 200ms they reach the file
// while it runs; with 1h they do not, until a rotation (rename, SIGUSR1)
// writes them all to the renamed file, and the lines after it go to the
// new file at the clean stop. None is lost.
func TestAccessLogFlushInterval(t *testing.T) {
	echo := newTCPEcho(t)

	p := startSluice(t, "default: allow\naccess_log: access.log\naccess_log_flush: 200ms\n", nil)
	if err := tunnelThrough(t, p.addr, echo.addr, "soon"); err != nil {
		t.Fatal(err)
	}
	if lines := waitLines(t, filepath.Join(p.dir, "access.log"), 1); len(lines) != 1 {
		t.Fatalf("lines %q", lines)
	}
	p.stop(t)

	p = startSluice(t, "default: allow\naccess_log: access.log\naccess_log_flush: 1h\n", nil)
	path := filepath.Join(p.dir, "access.log")
	const before, after = 5, 3
	for i := range before {
		if err := tunnelThrough(t, p.addr, echo.addr, fmt.Sprint("before ", i)); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(500 * time.Millisecond) // time enough to write a line that is not buffered
	if b, _ := os.ReadFile(path); len(b) != 0 {
		t.Fatalf("with access_log_flush: 1h, lines were written while running:\n%s", b)
	}
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	p.waitLog(t, `SIGUSR1: access log reopened`)
	if n := len(jsonAccessLines(t, path+".1")); n != before {
		t.Fatalf("the rotated file has %d lines, want %d", n, before)
	}
	for i := range after {
		if err := tunnelThrough(t, p.addr, echo.addr, fmt.Sprint("after ", i)); err != nil {
			t.Fatal(err)
		}
	}
	p.stop(t)
	if n := len(jsonAccessLines(t, path)); n != after {
		t.Fatalf("the new file has %d lines after the stop, want %d", n, after)
	}
	if n := len(jsonAccessLines(t, path+".1")); n != before {
		t.Fatalf("the rotated file has %d lines after the stop, want %d", n, before)
	}
}

// TestAccessLogUnwritable: an access log that cannot be written (a full
// disk: /dev/full) does not stop the proxy: tunnels still work, and stderr
// says loudly which file fails, why, and how many lines were lost;
// buffered or not.
func TestAccessLogUnwritable(t *testing.T) {
	echo := newTCPEcho(t)
	for _, flush := range []string{"200ms", "off"} {
		t.Run(flush, func(t *testing.T) {
			p := startSluice(t, "default: allow\naccess_log: /dev/full\naccess_log_flush: "+flush+"\n", nil)
			for i := range 3 {
				if err := tunnelThrough(t, p.addr, echo.addr, fmt.Sprint("full ", i)); err != nil {
					t.Fatalf("tunnel %d with a full log disk: %v", i, err)
				}
			}
			p.waitLog(t, `access log: cannot write the file.*/dev/full.*no space left on device.*"lines":[1-9]`)
		})
	}
}

// TestAccessLogHungFile: an access log that takes no more (a FIFO nobody
// reads, as a hung mount) never holds up requests: 150 requests with long
// paths (3 MB of lines, more than the pipe and the log's queue hold) are
// all answered, stderr reports the lines dropped, and once the file moves
// again what reaches it is whole lines.
func TestAccessLogHungFile(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "access.fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := os.OpenFile(fifo, os.O_RDONLY|syscall.O_NONBLOCK, 0) // open, never read: the pipe fills
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	o := newOrigin(t, false)
	p := startSluice(t, "default: allow\nhosts: {allowed.test: 127.0.0.1}\naccess_log: "+fifo+"\naccess_log_flush: 50ms\n", nil)
	proxyURL, _ := url.Parse("http://" + p.addr)
	client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}}
	defer client.CloseIdleConnections()
	long := strings.Repeat("x", 20<<10)
	const requests = 150
	for i := range requests {
		resp, err := client.Get(fmt.Sprintf("http://allowed.test:%s/%d/%s", o.port, i, long))
		if err != nil {
			t.Fatalf("request %d while the log file takes nothing: %v", i, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: %s", i, resp.Status)
		}
	}
	p.waitLog(t, `access log: lines dropped.*`+regexp.QuoteMeta(fifo))
	if err := syscall.SetNonblock(int(r.Fd()), false); err != nil {
		t.Fatal(err)
	}
	got := make(chan []byte)
	go func() {
		var b bytes.Buffer
		b.ReadFrom(r)
		got <- b.Bytes()
	}()
	p.stop(t)
	var b []byte
	select {
	case b = <-got:
	case <-time.After(20 * time.Second):
		t.Fatal("the FIFO was not closed at the stop")
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(b) == 0 || b[len(b)-1] != '\n' || len(lines) >= requests {
		t.Fatalf("%d bytes, %d lines read: want whole lines, fewer than %d", len(b), len(lines), requests)
	}
	for _, l := range lines {
		var m struct{ Msg, Path string }
		if err := json.Unmarshal([]byte(l), &m); err != nil || m.Msg != "access" || !strings.HasSuffix(m.Path, long) {
			t.Fatalf("not a whole access line (%v): %.100q", err, l)
		}
	}
}
