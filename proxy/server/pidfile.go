package server

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/sluiceproxy/sluice/rules"
)

// ErrAlreadyRunning means the pid file names a live `sluice serve` of the
// same config: a second one would take its pid file away.
var ErrAlreadyRunning = errors.New("server: a sluice serve of this config already runs")

// writePidFile writes the process id to path (nothing when path is ""),
// through a temporary file renamed into place. It refuses with
// ErrAlreadyRunning when path names another live `sluice serve` of config.
func writePidFile(path, config string) error {
	if path == "" {
		return nil
	}
	if pid, err := readPidFile(path); err == nil && pid != os.Getpid() && CheckServer(pid, config) == nil {
		return fmt.Errorf("%w: pid %d (pid file %s)", ErrAlreadyRunning, pid, path)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".sluice-pid-*")
	if err != nil {
		return fmt.Errorf("server: pid file: %w", err)
	}
	_, err = fmt.Fprintf(tmp, "%d\n", os.Getpid())
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("server: pid file: %w", err)
	}
	return nil
}

// removePidFile removes path when it still holds this process's id.
func removePidFile(path string) {
	if path == "" {
		return
	}
	if pid, err := readPidFile(path); err == nil && pid == os.Getpid() {
		os.Remove(path)
	}
}

func readPidFile(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("server: pid file %s: no process id in it", path)
	}
	return pid, nil
}

// FindServer returns the process id of the `sluice serve` of the config
// file config, read from the config's pid file (`pid_file`, or NAME.pid
// beside it) and checked with CheckServer. It fails, saying why, when the
// pid file is missing or stale or names another program.
func FindServer(config string) (int, error) {
	abs, err := filepath.Abs(config)
	if err != nil {
		return 0, err
	}
	path := rules.DefaultPidFile(abs)
	if data, err := os.ReadFile(abs); err == nil {
		// A config being fixed may not parse; its default pid file is tried then.
		if cfg, err := rules.Parse(abs, data); err == nil {
			path = cfg.PidFile
		}
	}
	pid, err := readPidFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, fmt.Errorf("server: no pid file %s: is `sluice serve -c %s` running?", path, config)
	}
	if err != nil {
		return 0, err
	}
	if err := checkServer(pid, abs); err != nil {
		return 0, fmt.Errorf("server: pid file %s is stale: %w", path, err)
	}
	return pid, nil
}

// CheckServer checks, in /proc, that pid is a running `sluice serve` (its
// program is named sluice or is this program), and, when config is not "",
// one started with --config naming that file (resolved against the
// process's working folder).
func CheckServer(pid int, config string) error {
	if err := checkServer(pid, config); err != nil {
		return fmt.Errorf("server: %w", err)
	}
	return nil
}

func checkServer(pid int, config string) error {
	if pid <= 0 {
		return fmt.Errorf("invalid process id %d", pid)
	}
	dir := filepath.Join("/proc", strconv.Itoa(pid))
	b, err := os.ReadFile(filepath.Join(dir, "cmdline"))
	if err != nil || len(b) == 0 {
		return fmt.Errorf("process %d is not running", pid)
	}
	args := strings.Split(string(bytes.TrimRight(b, "\x00")), "\x00")
	if len(args) < 2 || !isSluice(dir, args[0]) || args[1] != "serve" {
		return fmt.Errorf("process %d is not `sluice serve` but %q; not signalling it", pid, strings.Join(args, " "))
	}
	if config == "" {
		return nil
	}
	want, err := filepath.Abs(config)
	if err != nil {
		return err
	}
	cwd, _ := os.Readlink(filepath.Join(dir, "cwd"))
	got := ""
flags:
	for i, a := range args[2:] {
		switch {
		case (a == "--config" || a == "-c") && i+3 < len(args):
			got = args[i+3]
		case strings.HasPrefix(a, "--config="):
			got = strings.TrimPrefix(a, "--config=")
		case strings.HasPrefix(a, "-c") && len(a) > 2:
			got = strings.TrimPrefix(a, "-c")
		default:
			continue
		}
		break flags
	}
	if got == "" {
		return fmt.Errorf("process %d is `sluice serve` of the embedded default config, not of %s; not signalling it", pid, want)
	}
	if !filepath.IsAbs(got) {
		got = filepath.Join(cwd, got)
	}
	if filepath.Clean(got) != want {
		return fmt.Errorf("process %d is `sluice serve` of %s, not of %s; not signalling it", pid, filepath.Clean(got), want)
	}
	return nil
}

// isSluice reports whether the process in procDir, started as argv0, runs
// Sluice: its program is named sluice, or is the same file as this one.
func isSluice(procDir, argv0 string) bool {
	if filepath.Base(argv0) == "sluice" {
		return true
	}
	self, err := os.Executable()
	if err != nil {
		return false
	}
	exe, err := os.Readlink(filepath.Join(procDir, "exe"))
	return err == nil && exe == self
}
