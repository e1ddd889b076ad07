package server

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// logBuf is a log destination that tests can read while the server writes.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// waitFor polls cond for up to 20 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

// running is a Server started with Run in a goroutine.
type running struct {
	s      *Server
	addr   string
	log    *logBuf
	cancel context.CancelFunc
	done   chan error
}

func startRun(t testing.TB, cfg string) *running {
	t.Helper()
	return startRunFiles(t, cfg, nil)
}

// startRunFiles is startRun with files beside the config.
func startRunFiles(t testing.TB, cfg string, files map[string]string) *running {
	t.Helper()
	lb := &logBuf{}
	s, err := New(Options{Config: writeConfig(t, "default: allow\n"+cfg, files), Listen: []string{"127.0.0.1:0"}, NoSignals: true,
		Logger: slog.New(slog.NewTextHandler(lb, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{s: s, log: lb, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- s.Run(ctx) }()
	rx := regexp.MustCompile(`listening on ([0-9.:]+)`)
	waitFor(t, "listening", func() bool { return rx.MatchString(lb.String()) })
	r.addr = rx.FindStringSubmatch(lb.String())[1]
	t.Cleanup(func() { cancel(); r.wait(t) })
	return r
}

// open returns the number of connections the server tracks.
func (r *running) open() int { return r.s.conns.len() }

// wait waits up to 30 s for Run to return nil.
func (r *running) wait(t testing.TB) {
	t.Helper()
	select {
	case err := <-r.done:
		if err != nil {
			t.Fatalf("Run = %v", err)
		}
		r.done <- nil // for a later wait
	case <-time.After(30 * time.Second):
		t.Fatalf("Run did not return within 30s; log:\n%s", r.log)
	}
}

// echoOrigin answers every line with the same line.
func echoOrigin(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() { defer c.Close(); io.Copy(c, c) })
		}
	})
	return ln.Addr().String()
}

func tunnel(t *testing.T, proxy, target string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", proxy)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("CONNECT: %v %v", resp, err)
	}
	return c, br
}

func roundTrip(c net.Conn, br *bufio.Reader, line string) error {
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		return err
	}
	got, err := br.ReadString('\n')
	if err == nil && got != line+"\n" {
		err = fmt.Errorf("got %q", got)
	}
	return err
}

// TestRunDrains: after ctx is cancelled, an open tunnel keeps working, an
// idle keep-alive connection is closed, new connections are refused, and
// Run returns once the tunnel is closed, leaving no goroutine behind
// (TestMain checks with goleak).
func TestRunDrains(t *testing.T) {
	origin := echoOrigin(t)
	r := startRun(t, "shutdown_grace: 2m\n")
	c, br := tunnel(t, r.addr, origin)

	// An idle keep-alive connection: one request (not a proxy request,
	// answered 400), then nothing.
	idle, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	io.WriteString(idle, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	ibr := bufio.NewReader(idle)
	resp, err := http.ReadResponse(ibr, nil)
	if err != nil || resp.StatusCode != 400 || resp.Close {
		t.Fatalf("keep-alive request: %v %v", resp, err)
	}
	io.Copy(io.Discard, resp.Body)

	// Connected before the shutdown, its request comes after.
	late, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer late.Close()
	waitFor(t, "the connection to be accepted", func() bool { return r.open() >= 3 })

	r.cancel()
	waitFor(t, "shutting down", func() bool { return strings.Contains(r.log.String(), "shutting down") })
	late.SetDeadline(time.Now().Add(20 * time.Second))
	io.WriteString(late, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, err := http.ReadResponse(bufio.NewReader(late), nil); err != nil || resp.StatusCode != 400 || !resp.Close {
		t.Fatalf("a request on a connection accepted before the shutdown: %v %v, want 400 and Connection: close", resp, err)
	}
	idle.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := ibr.ReadByte(); err == nil || isTimeout(err) {
		t.Fatalf("idle keep-alive connection after shutdown began: %v, want closed", err)
	}
	if n, err := net.DialTimeout("tcp", r.addr, 5*time.Second); err == nil {
		n.Close()
		t.Fatal("accepted a connection after shutdown began")
	}
	if err := roundTrip(c, br, "still here"); err != nil {
		t.Fatalf("tunnel during the grace period: %v", err)
	}
	select {
	case <-r.done:
		t.Fatal("Run returned with a tunnel open")
	default:
	}
	c.Close()
	r.wait(t)
}

// TestRunGraceEnds: what is still open when shutdown_grace ends is closed,
// both HTTP tunnels and SOCKS connections, and Run returns nil.
func TestRunGraceEnds(t *testing.T) {
	origin := echoOrigin(t)
	r := startRun(t, "shutdown_grace: 300ms\n")
	_, br := tunnel(t, r.addr, origin)
	sc, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	sc.SetDeadline(time.Now().Add(20 * time.Second))
	sc.Write([]byte{5, 1, 0}) // a SOCKS5 greeting, then nothing
	if _, err := io.ReadFull(sc, make([]byte, 2)); err != nil {
		t.Fatal(err)
	}
	r.cancel()
	r.wait(t)
	if _, err := br.ReadByte(); err == nil || isTimeout(err) {
		t.Fatalf("tunnel after the grace period: %v, want closed", err)
	}
	if _, err := sc.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("SOCKS connection after the grace period: %v, want closed", err)
	}
	if !strings.Contains(r.log.String(), "grace period over") {
		t.Fatalf("log:\n%s", r.log)
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// TestRunLimitsAndLifetime (under the race detector, which the binary in
// test/ is not): beyond per_client a CONNECT gets 503, a tunnel is closed
// after timeouts.lifetime, and the counts drop back to zero.
func TestRunLimitsAndLifetime(t *testing.T) {
	origin := echoOrigin(t)
	r := startRun(t, "timeouts: {lifetime: 300ms}\nlimits: {per_client: 1}\n")
	c, br := tunnel(t, r.addr, origin)
	if err := roundTrip(c, br, "one"); err != nil {
		t.Fatal(err)
	}
	over, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer over.Close()
	over.SetDeadline(time.Now().Add(20 * time.Second))
	fmt.Fprintf(over, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", origin, origin)
	if resp, err := http.ReadResponse(bufio.NewReader(over), nil); err != nil || resp.StatusCode != 503 {
		t.Fatalf("CONNECT beyond per_client: %v %v, want 503", resp, err)
	}
	if _, err := br.ReadByte(); err == nil || isTimeout(err) {
		t.Fatalf("tunnel after its lifetime: %v, want closed", err)
	}
	over.Close()
	waitFor(t, "every connection to be forgotten", func() bool { return r.open() == 0 })
	r.s.conns.mu.Lock()
	counted, clients := r.s.conns.counted, len(r.s.conns.perClient)
	r.s.conns.mu.Unlock()
	if counted != 0 || clients != 0 {
		t.Fatalf("after every connection closed: %d counted, %d clients, want 0", counted, clients)
	}
	if n := strings.Count(r.log.String(), "connection limit reached"); n != 1 {
		t.Fatalf("%d limit lines, want 1", n)
	}
}
