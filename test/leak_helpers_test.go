package test

// Fixtures of the leak test: origins that misbehave on purpose (a body
// that trickles, a black hole that never completes a handshake), an echo
// origin that counts its open connections, and readers of a process's
// open file descriptors and goroutines.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// tcpEcho is a loopback TCP origin that echoes what it reads. When the
// client half-closes, it finishes echoing, half-closes too and closes. It
// counts the connections it holds open.
type tcpEcho struct {
	ln   net.Listener
	addr string
	open atomic.Int64
	wg   sync.WaitGroup
}

func newTCPEcho(t *testing.T) *tcpEcho {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &tcpEcho{ln: ln, addr: ln.Addr().String()}
	e.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			e.open.Add(1)
			e.wg.Go(func() {
				defer e.open.Add(-1)
				defer c.Close()
				c.SetDeadline(time.Now().Add(60 * time.Second)) // bounded, whatever the proxy does
				if _, err := io.Copy(c, c); err == nil {
					c.(*net.TCPConn).CloseWrite()
				}
			})
		}
	})
	t.Cleanup(func() { ln.Close(); e.wg.Wait() })
	return e
}

// newTrickleOrigin is a loopback HTTP origin without keep-alive (so the
// proxy pools no connection to it): /fast answers at once, /slow sends 64
// chunks of 1 KiB 10 ms apart.
func newTrickleOrigin(t *testing.T) string {
	t.Helper()
	chunk := bytes.Repeat([]byte("x"), 1024)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/slow" {
			io.WriteString(w, "fast body\n")
			return
		}
		w.Header().Set("Content-Length", fmt.Sprint(64*len(chunk)))
		rc := http.NewResponseController(w)
		for range 64 {
			if _, err := w.Write(chunk); err != nil {
				return
			}
			rc.Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}))
	srv.Config.SetKeepAlivesEnabled(false)
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// newBlackHole returns a loopback address where a dial hangs: a listener
// with a backlog of 0 that never accepts, its accept queue filled, so the
// kernel drops every further SYN and the dialer retransmits until its
// timeout.
func newBlackHole(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
	for range 16 {
		c, err := net.DialTimeout("tcp", addr, 500*time.Millisecond)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return addr // the queue is full: SYNs go unanswered
			}
			t.Fatalf("filling the black hole's queue: %v", err)
		}
		t.Cleanup(func() { c.Close() })
	}
	t.Fatalf("the black hole at %s still completes handshakes after 16 connections", addr)
	return ""
}

// openFDs counts the open file descriptors of process pid.
func openFDs(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatalf("reading the fds of %d: %v", pid, err)
	}
	return len(ents)
}

// describeFDs summarizes what the open fds of pid are (socket, pipe,
// anon_inode:[eventpoll], files), for a failure message.
func describeFDs(pid int) string {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, _ := os.ReadDir(dir)
	kinds := map[string]int{}
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		if i := strings.Index(target, ":["); i >= 0 {
			target = target[:i]
		}
		kinds[target]++
	}
	var lines []string
	for k, n := range kinds {
		lines = append(lines, fmt.Sprintf("%5d %s", n, k))
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// resources is what the leak test measures.
type resources struct{ fds, sockets, goroutines int }

func (r resources) String() string {
	return fmt.Sprintf("%d fds (%d sockets), %d goroutines", r.fds, r.sockets, r.goroutines)
}

// measure reads the open fds, the sockets among them and the goroutines of
// p. With gc, it first has the process collect garbage twice (through the
// heap profile's gc=1): Go keeps splice(2) pipes in a pool that only a
// collection empties, so fds are comparable only after one. Sockets are
// counted without it, so that a connection dropped without Close (which
// a collection would close through its finalizer) still counts.
func measure(t *testing.T, p *proc, admin string, gc bool) resources {
	t.Helper()
	if gc {
		for range 2 {
			if code, _ := httpGet(t, "http://"+admin+"/debug/pprof/heap?gc=1"); code != 200 {
				t.Fatalf("heap profile: %d", code)
			}
		}
	}
	pid := p.cmd.Process.Pid
	return resources{fds: openFDs(t, pid), sockets: countFDs(pid, "socket:"), goroutines: goroutines(t, admin)}
}

// countFDs counts the fds of pid whose link starts with prefix.
func countFDs(pid int, prefix string) int {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, _ := os.ReadDir(dir)
	n := 0
	for _, e := range ents {
		if target, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil && strings.HasPrefix(target, prefix) {
			n++
		}
	}
	return n
}
