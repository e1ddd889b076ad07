package test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// sleeper starts a process that is not sluice and that SIGHUP would kill,
// so that a test can see whether it was signalled.
func sleeper(t *testing.T) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sleep", "300")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-exited })
	return cmd
}

// alive reports whether the process pid still runs (not a zombie).
func alive(pid int) bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return len(f) > 0 && f[0] != "Z"
}

// TestPidFile: serve writes NAME.pid beside NAME.yaml (or pid_file) and
// removes it at exit; `sluice reload -c` signals that process.
func TestPidFile(t *testing.T) {
	p := startSluice(t, "", nil)
	pidFile := filepath.Join(p.dir, "sluice.pid")
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatalf("no pid file beside the config: %v", err)
	}
	if got := strings.TrimSpace(string(b)); got != strconv.Itoa(p.cmd.Process.Pid) {
		t.Fatalf("pid file holds %q, want %d", got, p.cmd.Process.Pid)
	}
	before := strings.Count(p.Log(), "rules reloaded")
	if out, code := runCLI(t, p.dir, "reload", "-c", "sluice.yaml"); code != 0 {
		t.Fatalf("reload -c sluice.yaml: exit %d: %s", code, out)
	}
	eventually(t, "the server reloads", func() bool { return strings.Count(p.Log(), "rules reloaded") > before })
	p.stop(t)
	if _, err := os.Stat(pidFile); !os.IsNotExist(err) {
		t.Fatalf("pid file still there after exit: %v", err)
	}

	// pid_file: moves it; a second serve of the same config is refused.
	q := startSluice(t, "pid_file: run.pid\n", nil)
	if _, err := os.Stat(filepath.Join(q.dir, "run.pid")); err != nil {
		t.Fatalf("pid_file: run.pid not written: %v", err)
	}
	out, code := runCLI(t, q.dir, "serve", "-c", filepath.Join(q.dir, "sluice.yaml"))
	if code == 0 || !strings.Contains(out, "already runs") {
		t.Fatalf("a second serve of the same config: exit %d, want a refusal: %s", code, out)
	}
	if out, code := runCLI(t, q.dir, "reload", "-c", "sluice.yaml"); code != 0 {
		t.Fatalf("reload with pid_file: exit %d: %s", code, out)
	}
}

// TestReloadRefusesOtherProcesses: a stale pid file, a pid file naming
// another program, `--pid` of another program and `--pid` of a sluice
// serving another config are refused, and nothing is signalled.
func TestReloadRefusesOtherProcesses(t *testing.T) {
	p := startSluice(t, "", nil)
	other := sleeper(t)
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"sluice.yaml": "listen: [\"127.0.0.1:0\"]\n"})
	pidFile := filepath.Join(dir, "sluice.pid")

	// A pid file whose process is gone.
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	writeFiles(t, dir, map[string]string{"sluice.pid": strconv.Itoa(gone.Process.Pid) + "\n"})
	out, code := runCLI(t, dir, "reload", "-c", "sluice.yaml")
	if code != 1 || !strings.Contains(out, "stale") || !strings.Contains(out, "not running") {
		t.Fatalf("stale pid file: exit %d: %s", code, out)
	}

	// A pid file naming another program.
	writeFiles(t, dir, map[string]string{"sluice.pid": strconv.Itoa(other.Process.Pid) + "\n"})
	out, code = runCLI(t, dir, "reload", "-c", "sluice.yaml")
	if code != 1 || !strings.Contains(out, "not `sluice serve`") {
		t.Fatalf("pid file of another program: exit %d: %s", code, out)
	}
	// A pid file naming a sluice serve of another config.
	writeFiles(t, dir, map[string]string{"sluice.pid": strconv.Itoa(p.cmd.Process.Pid) + "\n"})
	before := strings.Count(p.Log(), "SIGHUP")
	out, code = runCLI(t, dir, "reload", "-c", "sluice.yaml")
	if code != 1 || !strings.Contains(out, "not of "+filepath.Join(dir, "sluice.yaml")) {
		t.Fatalf("pid file of another config's server: exit %d: %s", code, out)
	}
	// No pid file.
	os.Remove(pidFile)
	if out, code = runCLI(t, dir, "reload", "-c", "sluice.yaml"); code != 1 || !strings.Contains(out, "no pid file") {
		t.Fatalf("no pid file: exit %d: %s", code, out)
	}

	// --pid of another program, and --pid with the wrong -c.
	if out, code = runCLI(t, dir, "reload", "--pid", strconv.Itoa(other.Process.Pid)); code != 1 || !strings.Contains(out, "not `sluice serve`") {
		t.Fatalf("--pid of sleep: exit %d: %s", code, out)
	}
	if out, code = runCLI(t, dir, "reload", "--pid", strconv.Itoa(p.cmd.Process.Pid), "-c", "sluice.yaml"); code != 1 {
		t.Fatalf("--pid of a server of another config: exit %d: %s", code, out)
	}
	// Without a target reload refuses rather than signalling every sluice.
	if out, code = runCLI(t, dir, "reload"); code != 2 || !strings.Contains(out, "--pid") {
		t.Fatalf("reload with no flags: exit %d: %s", code, out)
	}

	time.Sleep(200 * time.Millisecond) // a signal, had one been sent, is delivered by now
	if !alive(other.Process.Pid) {
		t.Fatal("sluice reload signalled a process that is not sluice serve")
	}
	if strings.Count(p.Log(), "SIGHUP") != before {
		t.Fatalf("sluice reload signalled the server of another config; log:\n%s", p.Log())
	}
	// The right --pid still works.
	if out, code = runCLI(t, p.dir, "reload", "--pid", strconv.Itoa(p.cmd.Process.Pid)); code != 0 {
		t.Fatalf("--pid of the server: exit %d: %s", code, out)
	}
	p.waitLog(t, "SIGHUP: reloading")
}
