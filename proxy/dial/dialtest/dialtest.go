// Package dialtest starts real upstream proxies (squid, danted,
// microsocks) and small TCP servers on loopback for tests, as
// net/http/httptest does for HTTP servers. It is meant only for tests.
//
// Every function takes the test's testing.TB and fails the test, never
// skips it, when a program is missing or does not start; the message says
// which package to install. Each program runs in its own process group,
// and the whole group is stopped at the cleanup of the test that started
// it. A fixture meant to serve a whole test binary is started through
// Shared.TB and stopped by Shared.Close in TestMain.
//
// Everything listens on 127.0.0.1. The package imports only the standard
// library, so the tests of any package may use it.
package dialtest

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"syscall"
	"testing"
	"time"
)

// packages names the Debian package of each program the fixtures run.
var packages = map[string]string{
	"squid":      "squid",
	"danted":     "dante-server",
	"microsocks": "microsocks",
	"htpasswd":   "apache2-utils",
}

// requireTool returns the path of program, looking in /usr/sbin and /sbin
// too, and fails t (never skips it) when the program is missing.
func requireTool(t testing.TB, program string) string {
	t.Helper()
	if p, err := exec.LookPath(program); err == nil {
		return p
	}
	for _, d := range []string{"/usr/sbin", "/sbin"} {
		if _, err := os.Stat(filepath.Join(d, program)); err == nil {
			return filepath.Join(d, program)
		}
	}
	t.Fatalf("dialtest: %s is not installed (apt-get install %s; `make test` installs it)", program, packages[program])
	return ""
}

// FreeAddr returns a loopback address (127.0.0.1:port) that was free a
// moment ago: for a fixture to listen on, or as an address where nothing
// listens.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln := Listen(t)
	defer ln.Close()
	return ln.Addr().String()
}

// tempDir returns a world-writable temp folder, removed at t's cleanup:
// squid drops to the proxy user and danted to nobody, and t.TempDir's
// parents are not theirs to enter.
func tempDir(t testing.TB, name string) string {
	t.Helper()
	d, err := os.MkdirTemp("", "sluice-up-"+name+"-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(d, 0o777); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// writeFile writes content to path, readable by all, or fails t.
func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// Proc is a running upstream proxy. Its program runs in its own process
// group, stopped as a whole at the cleanup of the test that started it.
type Proc struct {
	// Name tells the program (and the squid's ID) in messages.
	Name string
	// Addr is where it listens: 127.0.0.1:port.
	Addr string
	// Scheme is the upstream URL scheme it speaks: http, https, socks5 or
	// socks5h.
	Scheme string
	// User and Pass are the credentials it demands; empty when it demands
	// none.
	User, Pass string
	// LogFile has a line per request or connection the upstream handled
	// (squid's access log, danted's log). Empty for microsocks, which logs
	// nothing.
	LogFile string
	// CA is the PEM file of a TLS squid's certificate, to trust it by;
	// empty for the others.
	CA string

	dir  string // configs, logs and the program's output
	cmd  *exec.Cmd
	done chan struct{} // closed when the program has exited
	stop sync.Once
}

// Port returns the port of Addr.
func (p *Proc) Port() string {
	_, port, _ := net.SplitHostPort(p.Addr)
	return port
}

// URL returns a new URL of the upstream (Scheme://Addr), with User and
// Pass as its user info when it demands credentials.
func (p *Proc) URL() *url.URL {
	u := &url.URL{Scheme: p.Scheme, Host: p.Addr}
	if p.User != "" {
		u.User = url.UserPassword(p.User, p.Pass)
	}
	return u
}

// Log returns the upstream's log so far ("" when it has none).
func (p *Proc) Log() string {
	if p.LogFile == "" {
		return ""
	}
	b, _ := os.ReadFile(p.LogFile)
	return string(b)
}

// Count returns how many times the regular expression re matches the
// upstream's log now.
func (p *Proc) Count(re string) int {
	return len(regexp.MustCompile(re).FindAllStringIndex(p.Log(), -1))
}

// WaitLog waits (up to 5 s) until the regular expression re matches the
// upstream's log at least n times, and fails t otherwise. Upstreams write
// a line after the request is answered or the tunnel ends, so a bounded
// poll is needed.
func (p *Proc) WaitLog(t testing.TB, re string, n int) {
	t.Helper()
	rx := regexp.MustCompile(re)
	for range 250 {
		if len(rx.FindAllStringIndex(p.Log(), -1)) >= n {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("dialtest: %s log (%s) never matched %q %d times; log:\n%s", p.Name, p.LogFile, re, n, p.Log())
}

// Stop ends the upstream's process group: SIGTERM, then SIGKILL after
// 5 s, and waits for the program to exit. It is safe to call more than
// once; the cleanup of the test that started the upstream calls it.
func (p *Proc) Stop() {
	p.stop.Do(func() {
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
	})
}

// start runs program in its own process group, its output going to a
// file in p.dir, registers p.Stop as a cleanup of t and waits (up to 10 s)
// until p.Addr accepts connections. On failure the message holds the
// program's output and the file diag (its own log), when set.
func start(t testing.TB, p *Proc, diag, program string, args ...string) {
	t.Helper()
	path := requireTool(t, program)
	outPath := filepath.Join(p.dir, "output")
	out, err := os.Create(outPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(path, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Stdout, cmd.Stderr = out, out
	err = cmd.Start()
	out.Close() // the program has its own descriptor
	if err != nil {
		t.Fatalf("dialtest: start %s: %v", program, err)
	}
	p.cmd, p.done = cmd, make(chan struct{})
	go func() { cmd.Wait(); close(p.done) }()
	t.Cleanup(p.Stop)
	report := func() string {
		b, _ := os.ReadFile(outPath)
		s := fmt.Sprintf("output:\n%s", b)
		if diag != "" {
			d, _ := os.ReadFile(diag)
			s += fmt.Sprintf("\n%s:\n%s", filepath.Base(diag), d)
		}
		return s
	}
	for range 200 {
		select {
		case <-p.done:
			t.Fatalf("dialtest: %s exited before listening on %s: %v\n%s", p.Name, p.Addr, cmd.ProcessState, report())
		default:
		}
		c, err := net.DialTimeout("tcp", p.Addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("dialtest: %s did not listen on %s within 10s\n%s", p.Name, p.Addr, report())
}

// Shared holds the cleanups of fixtures that outlive the test that starts
// them, so that one upstream can serve a whole test binary. The zero value
// is ready to use. TestMain calls Close after m.Run.
type Shared struct {
	mu       sync.Mutex
	cleanups []func()
}

// TB returns t with its Cleanup redirected to s: what is started through
// it keeps running after t ends, until s.Close. Failures still fail t.
func (s *Shared) TB(t testing.TB) testing.TB { return sharedTB{t, s} }

// sharedTB is a testing.TB whose cleanups go to a Shared.
type sharedTB struct {
	testing.TB
	s *Shared
}

func (t sharedTB) Cleanup(f func()) {
	t.s.mu.Lock()
	defer t.s.mu.Unlock()
	t.s.cleanups = append(t.s.cleanups, f)
}

// Close runs the collected cleanups, the last registered first (so each
// process stops before its folder is removed), and forgets them.
func (s *Shared) Close() {
	s.mu.Lock()
	fs := s.cleanups
	s.cleanups = nil
	s.mu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		fs[i]()
	}
}
