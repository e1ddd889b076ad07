package test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// sluiceBin is the binary under test, built once by TestMain.
var sluiceBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "sluice-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	sluiceBin = filepath.Join(dir, "sluice")
	build := exec.Command("go", "build", "-o", sluiceBin, "../cmd/sluice")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building sluice:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// requireTool fails the test (never skips) when a program the test drives
// is missing: `make test` installs them.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		for _, d := range []string{"/usr/sbin", "/sbin"} {
			if _, err := os.Stat(filepath.Join(d, name)); err == nil {
				return filepath.Join(d, name)
			}
		}
		t.Fatalf("%s is not installed; run `make test`, which installs it", name)
	}
	return p
}

// proc is a running sluice process.
type proc struct {
	cmd  *exec.Cmd
	addr string // the first listener's address
	dir  string // the config's folder

	mu     sync.Mutex
	stderr bytes.Buffer
	done   chan struct{}
}

// Log returns everything the process logged so far.
func (p *proc) Log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

// waitLog waits until the log matches re, or fails the test after 10 s.
func (p *proc) waitLog(t *testing.T, re string) {
	t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if rx.MatchString(p.Log()) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("log never matched %q; log:\n%s", re, p.Log())
}

// writeFiles writes files (name -> content) into dir.
func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// startSluice writes config (and any extra files) into a temp folder and
// runs `sluice serve` on it, listening on a free loopback port unless the
// config says otherwise. It returns once the proxy accepts connections.
func startSluice(t *testing.T, config string, files map[string]string, args ...string) *proc {
	t.Helper()
	dir := t.TempDir()
	writeFiles(t, dir, files)
	if !strings.Contains(config, "listen:") {
		config = "listen: [\"127.0.0.1:0\"]\n" + config
	}
	cfg := filepath.Join(dir, "sluice.yaml")
	writeFiles(t, dir, map[string]string{"sluice.yaml": config})
	return runSluice(t, dir, append([]string{"serve", "--config", cfg}, args...)...)
}

// runSluice starts the binary with args and waits for "listening on".
func runSluice(t *testing.T, dir string, args ...string) *proc {
	t.Helper()
	return runProgram(t, dir, sluiceBin, args...)
}

// runProgram starts prog with args (a wrapper that ends by exec-ing sluice,
// such as sh setting a ulimit) and waits for "listening on".
func runProgram(t *testing.T, dir, prog string, args ...string) *proc {
	t.Helper()
	p := &proc{dir: dir, done: make(chan struct{})}
	p.cmd = exec.Command(prog, args...)
	p.cmd.Dir = dir
	p.cmd.Env = append(os.Environ(), "HTTP_PROXY=", "HTTPS_PROXY=", "http_proxy=", "https_proxy=", "ALL_PROXY=")
	r, w := io.Pipe()
	p.cmd.Stderr = w
	p.cmd.Stdout = w
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addrc := make(chan string, 1)
	go func() {
		rx := regexp.MustCompile(`listening on ([^"\s]+)`)
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.stderr.WriteString(line + "\n")
			p.mu.Unlock()
			if m := rx.FindStringSubmatch(line); m != nil {
				select {
				case addrc <- m[1]:
				default:
				}
			}
		}
	}()
	go func() { p.cmd.Wait(); w.Close(); close(p.done) }()
	t.Cleanup(func() { p.stop(t) })
	select {
	case p.addr = <-addrc:
	case <-p.done:
		t.Fatalf("sluice exited before listening: %v\n%s", p.cmd.ProcessState, p.Log())
	case <-time.After(60 * time.Second): // generous: a loaded machine starts slowly
		t.Fatalf("sluice did not listen within 60s:\n%s", p.Log())
	}
	return p
}

// stop sends SIGTERM and waits for the process to exit.
func (p *proc) stop(t *testing.T) {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
		t.Errorf("sluice did not stop within 10s of SIGINT")
	}
}

// runCLI runs the binary to completion and returns its output and exit code.
func runCLI(t *testing.T, dir string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, sluiceBin, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("sluice %v: %v", args, err)
		}
		code = ee.ExitCode()
	}
	return string(out), code
}

// curl runs the real curl with args and returns its output (headers with -i)
// and exit code.
func curl(t *testing.T, args ...string) (string, int) {
	t.Helper()
	bin := requireTool(t, "curl")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"-sS", "--max-time", "30"}, args...)...)
	cmd.Env = append(os.Environ(), "HTTP_PROXY=", "HTTPS_PROXY=", "http_proxy=", "https_proxy=", "ALL_PROXY=", "NO_PROXY=")
	out, err := cmd.CombinedOutput()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("curl %v: %v", args, err)
		}
		code = ee.ExitCode()
	}
	return string(out), code
}

// htpasswdFile writes a users file with the real `htpasswd -B` (bcrypt),
// one user a pair of arguments: name, password, name, password...
func htpasswdFile(t *testing.T, namePass ...string) string {
	t.Helper()
	htpasswd := requireTool(t, "htpasswd")
	users := filepath.Join(t.TempDir(), "users")
	for i := 0; i+1 < len(namePass); i += 2 {
		args := []string{"-B", "-b", users, namePass[i], namePass[i+1]}
		if i == 0 {
			args = append([]string{"-c"}, args...)
		}
		if out, err := exec.Command(htpasswd, args...).CombinedOutput(); err != nil {
			t.Fatalf("htpasswd: %v %s", err, out)
		}
	}
	return users
}
