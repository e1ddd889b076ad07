package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// target is a proxy under test, or the direct path (no proxy at all).
type target struct {
	name  string // column name: "Squid", "microsocks", "Sluice", "floor"...
	http  string // address of its HTTP proxy (CONNECT and absolute-URI); "" if none
	socks string // address of its SOCKS5 server; "" if none
	// fwd maps each origin's address to a port that forwards to it (a
	// TCP forwarder: no handshake); nil for a proxy.
	fwd   map[string]string
	pid   int    // its process, for CPU, memory and fds; 0 if unknown
	admin string // Sluice's admin listener (profiles), with -profile; else ""
	stop  func() // stops it and removes its files; nil for an external proxy
	// start starts a fresh one (new process, new port); nil for an
	// external proxy.
	start func(ctx context.Context) (*target, error)
}

// restart replaces t's process with a fresh one, so that a measurement of
// memory and fds starts from a process that no earlier load warmed up (Go
// keeps splice pipes in a pool after their tunnels close, for example).
// It does nothing for an external proxy.
func (t *target) restart(ctx context.Context) error {
	if t.start == nil {
		return nil
	}
	t.stop()
	nt, err := t.start(ctx)
	if err != nil {
		t.stop = func() {}
		return err
	}
	*t = *nt
	return nil
}

// tunnelVia is how a load reaches the origin through t: HTTP CONNECT when
// the proxy speaks it, straight through when t is a TCP forwarder, else
// SOCKS5.
func (t *target) tunnelVia() via {
	switch {
	case t.http != "":
		return viaConnect
	case t.fwd != nil:
		return viaForward
	}
	return viaSOCKS
}

// tunnelAddr is the address a load gives open with t.tunnelVia().
func (t *target) tunnelAddr() string {
	switch t.tunnelVia() {
	case viaConnect:
		return t.http
	case viaForward:
		return t.forwards()
	}
	return t.socks
}

// forwards is t.fwd as the table forwardAddr reads.
func (t *target) forwards() string {
	var b strings.Builder
	for o, l := range t.fwd {
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(o + "=" + l)
	}
	return b.String()
}

// peerFiles holds the configurations of the proxies the harness starts,
// kept in the repository (peers/): @PORT@, @DIR@ and @NOFILE@ are replaced.
func peerConfig(name, port, dir string, nofile int) (string, error) {
	b, err := peers.ReadFile("peers/" + name)
	if err != nil {
		return "", err
	}
	s := strings.NewReplacer("@PORT@", port, "@DIR@", dir, "@NOFILE@", strconv.Itoa(nofile)).Replace(string(b))
	return s, nil
}

// freePort returns a loopback port that was free a moment ago. When the
// machine has run out of ephemeral ports (TIME_WAIT of many short
// connections holds them for a minute), it tries again for up to a minute.
func freePort() (string, error) {
	var err error
	for range 60 {
		var ln net.Listener
		if ln, err = net.Listen("tcp", "127.0.0.1:0"); err == nil {
			defer ln.Close()
			_, port, _ := net.SplitHostPort(ln.Addr().String())
			return port, nil
		}
		time.Sleep(time.Second)
	}
	return "", err
}

// timeWaitPorts returns how many local ports connections in TIME_WAIT
// hold (/proc/net/tcp, tcp6), or -1. Many connections to one server port
// hold one port: only those on distinct ephemeral ports can take the last
// free ports of the machine.
func timeWaitPorts() int {
	ports := map[string]struct{}{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			return -1
		}
		for _, l := range strings.Split(string(b), "\n") {
			// sl local_address rem_address st ...; 06 is TIME_WAIT
			if fs := strings.Fields(l); len(fs) > 3 && fs[3] == "06" {
				if i := strings.LastIndexByte(fs[1], ':'); i >= 0 {
					ports[fs[1][i+1:]] = struct{}{}
				}
			}
		}
	}
	return len(ports)
}

// waitTimeWait waits, for at most limit, until connections in TIME_WAIT
// hold fewer than max local ports: a load that starts with few free
// ports measures the shortage, not the proxy (and takes the last ports
// from everyone else on the machine).
func waitTimeWait(max int, limit time.Duration) {
	n := timeWaitPorts()
	if n < max || limit <= 0 {
		return
	}
	progress("waiting for TIME_WAIT connections to expire: they hold %d ports, want fewer than %d", n, max)
	for end := time.Now().Add(limit); time.Now().Before(end) && n >= max; n = timeWaitPorts() {
		time.Sleep(time.Second)
	}
}

// lookTool finds a program in PATH, /usr/sbin or /sbin.
func lookTool(name string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/sbin", "/sbin"} {
		if p := filepath.Join(d, name); fileExists(p) {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s is not installed (make bench-peers installs it with apt-get)", name)
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// startProgram runs prog with args under an open files limit of nofile
// (soft and hard: sh's ulimit -n sets both, so that the program cannot
// raise it), in its own process group, with its output in logFile. The
// returned stop signals the group, waits up to 10 s, then kills it.
func startProgram(logFile string, nofile int, prog string, args ...string) (*exec.Cmd, func(), error) {
	out, err := os.Create(logFile)
	if err != nil {
		return nil, nil, err
	}
	sh := append([]string{"-c", `ulimit -n "$0" && exec "$@"`, strconv.Itoa(nofile), prog}, args...)
	cmd := exec.Command("/bin/sh", sh...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = append(os.Environ(), "HTTP_PROXY=", "HTTPS_PROXY=", "http_proxy=", "https_proxy=", "ALL_PROXY=")
	// Setpgid: stop reaches helpers too. Pdeathsig: the program dies with
	// the harness, whatever ends it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		out.Close()
		return nil, nil, err
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); out.Close(); close(done) }()
	stop := func() {
		pg := -cmd.Process.Pid
		syscall.Kill(pg, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			syscall.Kill(pg, syscall.SIGKILL)
			<-done
		}
		syscall.Kill(pg, syscall.SIGKILL) // any helper left in the group
	}
	return cmd, stop, nil
}

// launch runs prog with args as startProgram does and waits until each
// of addrs accepts a connection (and, when logRx is set, logFile matches
// it), within limit; on failure it stops the program and says why.
func launch(ctx context.Context, logFile string, nofile int, addrs []string, logRx string, limit time.Duration, prog string, args ...string) (*exec.Cmd, func(), error) {
	cmd, stop, err := startProgram(logFile, nofile, prog, args...)
	if err != nil {
		return nil, nil, err
	}
	for _, a := range addrs {
		if err := waitReady(ctx, cmd, a, logFile, logRx, limit); err != nil {
			stop()
			return nil, nil, err
		}
	}
	return cmd, stop, nil
}

// waitReady waits until addr accepts a connection and, when logRx is set,
// logFile matches it; it fails when the program exits first or after
// limit.
func waitReady(ctx context.Context, cmd *exec.Cmd, addr, logFile, logRx string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	var rx *regexp.Regexp
	if logRx != "" {
		rx = regexp.MustCompile(logRx)
	}
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if err := syscall.Kill(cmd.Process.Pid, 0); err != nil || exited(cmd.Process.Pid) {
			b, _ := os.ReadFile(logFile)
			return fmt.Errorf("%s exited before listening:\n%s", filepath.Base(cmd.Args[len(cmd.Args)-1]), tail(b))
		}
		if rx != nil {
			if b, _ := os.ReadFile(logFile); !rx.Match(b) {
				time.Sleep(50 * time.Millisecond)
				continue
			}
		}
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	b, _ := os.ReadFile(logFile)
	return fmt.Errorf("nothing listened on %s within %v:\n%s", addr, limit, tail(b))
}

// quiesce waits until pid has stopped using CPU (less than 20 ms in
// 250 ms), for at most 30 s: a proxy that just compiled large lists frees
// their memory in the background, and that must not count as a load's.
func quiesce(pid int) {
	prev, err := cpuSeconds(pid)
	for end := time.Now().Add(30 * time.Second); err == nil && time.Now().Before(end); {
		time.Sleep(250 * time.Millisecond)
		var cur float64
		if cur, err = cpuSeconds(pid); err != nil || cur-prev < 0.02 {
			return
		}
		prev = cur
	}
}

// exited reports whether pid is a zombie or gone.
func exited(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	f := statFields(b)
	return len(f) > 0 && f[0] == "Z"
}

func tail(b []byte) string {
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// tempDir makes a folder every user may enter (squid drops to the proxy
// user).
func tempDir(name string) (string, error) {
	d, err := os.MkdirTemp("", "sluice-loadgen-"+name+"-")
	if err != nil {
		return "", err
	}
	return d, os.Chmod(d, 0o777)
}

// startSluice starts the Sluice binary on the harness's config (peers/
// sluice.yaml) plus the text that files, when set, returns after writing
// what it needs into the config's folder; it waits for "listening on".
func startSluice(ctx context.Context, o *options, name string, files func(dir string) (string, error)) (*target, error) {
	t, err := inTempDir("sluice", func(dir string) (*target, error) {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		cfg, err := peerConfig("sluice.yaml", port, dir, o.nofile)
		if err != nil {
			return nil, err
		}
		admin := ""
		if o.profileDir != "" {
			aport, err := freePort()
			if err != nil {
				return nil, err
			}
			admin = "127.0.0.1:" + aport
			cfg += "admin: " + admin + "\n"
		}
		if files != nil {
			extra, err := files(dir)
			if err != nil {
				return nil, err
			}
			cfg += extra
		}
		cf := filepath.Join(dir, "sluice.yaml")
		if err := os.WriteFile(cf, []byte(cfg), 0o644); err != nil {
			return nil, err
		}
		bin, err := filepath.Abs(o.sluiceBin)
		if err != nil {
			return nil, err
		}
		logf := filepath.Join(dir, "sluice.log")
		addr := "127.0.0.1:" + port
		cmd, stop, err := launch(ctx, logf, o.nofile, []string{addr}, `listening on `+regexp.QuoteMeta(addr), 180*time.Second, bin, "serve", "--config", cf)
		if err != nil {
			return nil, err
		}
		quiesce(cmd.Process.Pid)
		// Sluice serves HTTP and SOCKS5 on one port.
		return &target{name: name, http: addr, socks: addr, pid: cmd.Process.Pid, admin: admin, stop: stop}, nil
	})
	if err != nil {
		return nil, err
	}
	t.start = func(ctx context.Context) (*target, error) { return startSluice(ctx, o, name, files) }
	return t, nil
}

// inTempDir runs start in a new temporary folder for prog: the folder is
// removed when start fails or when the target it returns stops, and an
// error names prog.
func inTempDir(prog string, start func(dir string) (*target, error)) (*target, error) {
	dir, err := tempDir(prog)
	if err != nil {
		return nil, err
	}
	t, err := start(dir)
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("%s: %w", prog, err)
	}
	stop := t.stop
	t.stop = func() { stop(); os.RemoveAll(dir) }
	return t, nil
}

// startSquid starts squid in the foreground as one process (-N: no
// daemon, no SMP workers) on peers/squid.conf.
func startSquid(ctx context.Context, o *options) (*target, error) {
	bin, err := lookTool(o.squidBin)
	if err != nil {
		return nil, err
	}
	t, err := inTempDir("squid", func(dir string) (*target, error) {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		cfg, err := peerConfig("squid.conf", port, dir, o.nofile)
		if err != nil {
			return nil, err
		}
		cf := filepath.Join(dir, "squid.conf")
		if err := os.WriteFile(cf, []byte(cfg), 0o644); err != nil {
			return nil, err
		}
		logf := filepath.Join(dir, "squid.out")
		addr := "127.0.0.1:" + port
		cmd, stop, err := launch(ctx, logf, o.nofile, []string{addr}, "", 60*time.Second, bin, "-N", "-f", cf)
		if err != nil {
			b, _ := os.ReadFile(filepath.Join(dir, "cache.log"))
			return nil, fmt.Errorf("%w\ncache.log:\n%s", err, tail(b))
		}
		return &target{name: "Squid", http: addr, pid: cmd.Process.Pid, stop: stop}, nil
	})
	if err != nil {
		return nil, err
	}
	t.start = func(ctx context.Context) (*target, error) { return startSquid(ctx, o) }
	return t, nil
}

// startMicrosocks starts microsocks (SOCKS5 only, no configuration file:
// its whole configuration is the listen address).
func startMicrosocks(ctx context.Context, o *options) (*target, error) {
	bin, err := lookTool(o.microsocksBin)
	if err != nil {
		return nil, err
	}
	t, err := inTempDir("microsocks", func(dir string) (*target, error) {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		logf := filepath.Join(dir, "microsocks.out")
		addr := "127.0.0.1:" + port
		cmd, stop, err := launch(ctx, logf, o.nofile, []string{addr}, "", 30*time.Second, bin, "-i", "127.0.0.1", "-p", port)
		if err != nil {
			return nil, err
		}
		return &target{name: "microsocks", socks: addr, pid: cmd.Process.Pid, stop: stop}, nil
	})
	if err != nil {
		return nil, err
	}
	t.start = func(ctx context.Context) (*target, error) { return startMicrosocks(ctx, o) }
	return t, nil
}

// statFields returns the fields of /proc/PID/stat after the command name,
// starting with the state: [0] state, [1] ppid, [11] utime, [12] stime,
// [13] cutime, [14] cstime.
func statFields(b []byte) []string {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(string(b[i+1:]))
}

// tree returns pid and its descendants, from /proc.
func tree(pid int) []int {
	ents, _ := os.ReadDir("/proc")
	kids := map[int][]int{}
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		if f := statFields(b); len(f) > 1 {
			pp, _ := strconv.Atoi(f[1])
			kids[pp] = append(kids[pp], p)
		}
	}
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		out = append(out, kids[out[i]]...)
	}
	return out
}

// clockTick is USER_HZ, the unit of /proc/PID/stat's times: 100 on every
// Linux architecture Go runs on.
const clockTick = 100

// cpuSeconds returns the CPU time (user + system) of pid and all its
// descendants, the live ones and the ones waited for.
func cpuSeconds(pid int) (float64, error) {
	if pid == 0 {
		return 0, errors.New("no process id")
	}
	var ticks int64
	for i, p := range tree(pid) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			if i == 0 {
				return 0, err
			}
			continue
		}
		f := statFields(b)
		if len(f) < 15 {
			continue
		}
		for _, k := range []int{11, 12, 13, 14} {
			v, _ := strconv.ParseInt(f[k], 10, 64)
			ticks += v
		}
	}
	return float64(ticks) / clockTick, nil
}

// memFDs returns the resident size (VmRSS, KiB) and the open file
// descriptors of pid and its descendants.
func memFDs(pid int) (rssKiB int64, fds int, err error) {
	if pid == 0 {
		return 0, 0, errors.New("no process id")
	}
	for i, p := range tree(pid) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p))
		if err != nil {
			if i == 0 {
				return 0, 0, err
			}
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
				v, _ := strconv.ParseInt(f[1], 10, 64)
				rssKiB += v
			}
		}
		ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p))
		fds += len(ents)
	}
	return rssKiB, fds, nil
}
