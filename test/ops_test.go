package test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// command runs a program to completion within a minute and returns its
// combined output, failing the test when it does not exit 0.
func command(t *testing.T, dir string, env []string, prog string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, prog, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %q: %v\n%s", prog, args, err, out)
	}
	return string(out)
}

// unitFile is the shipped systemd unit.
const unitFile = "../contrib/sluice.service"

// exposure runs `systemd-analyze security --offline=true` on a unit file
// and returns the overall exposure level and its rating.
func exposure(t *testing.T, unit string) (float64, string) {
	t.Helper()
	bin := requireTool(t, "systemd-analyze")
	out, err := exec.Command(bin, "security", "--offline=true", "--no-pager", unit).CombinedOutput()
	m := regexp.MustCompile(`Overall exposure level for \S+: (\d+\.\d+) (\S+)`).FindStringSubmatch(string(out))
	if m == nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	level, _ := strconv.ParseFloat(m[1], 64)
	return level, m[2]
}

// TestUnitSandboxRatedOK: systemd-analyze rates the shipped unit 3.0 or
// lower ("OK"), and also its documented variant for ports below 1024; the
// unit has the sandbox the README promises.
func TestUnitSandboxRatedOK(t *testing.T) {
	level, rating := exposure(t, unitFile)
	t.Logf("contrib/sluice.service: exposure %.1f %s", level, rating)
	if level > 3.0 || rating != "OK" {
		t.Errorf("exposure %.1f %s, want 3.0 or lower (OK)", level, rating)
	}
	data, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(data), "\n")
	for _, want := range []string{
		"User=sluice", "ProtectSystem=strict", "StateDirectory=sluice", "CacheDirectory=sluice",
		"ConfigurationDirectory=sluice", "RuntimeDirectory=sluice", "CapabilityBoundingSet=",
		"SystemCallFilter=@system-service", "NoNewPrivileges=yes",
	} {
		if !slices.Contains(lines, want) {
			t.Errorf("unit lacks the line %q", want)
		}
	}

	// The variant for ports below 1024, as the unit's comment gives it.
	variant := filepath.Join(t.TempDir(), "sluice.service")
	extra := "[Service]\nCapabilityBoundingSet=CAP_NET_BIND_SERVICE\nAmbientCapabilities=CAP_NET_BIND_SERVICE\nPrivateUsers=no\n"
	if !strings.Contains(string(data), "#   CapabilityBoundingSet=CAP_NET_BIND_SERVICE\n#   AmbientCapabilities=CAP_NET_BIND_SERVICE\n#   PrivateUsers=no\n") {
		t.Error("the unit's comment does not give the CAP_NET_BIND_SERVICE variant tested here")
	}
	if err := os.WriteFile(variant, append(data, extra...), 0o644); err != nil {
		t.Fatal(err)
	}
	level, rating = exposure(t, variant)
	t.Logf("with CAP_NET_BIND_SERVICE: exposure %.1f %s", level, rating)
	if level > 3.0 || rating != "OK" {
		t.Errorf("variant: exposure %.1f %s, want 3.0 or lower (OK)", level, rating)
	}

	// A unit without the sandbox is rated worse: the check can fail.
	var bare []string
	for _, l := range lines {
		if !strings.HasPrefix(l, "Protect") && !strings.HasPrefix(l, "Private") && !strings.HasPrefix(l, "SystemCall") &&
			!strings.HasPrefix(l, "Capability") && !strings.HasPrefix(l, "Restrict") {
			bare = append(bare, l)
		}
	}
	if err := os.WriteFile(variant, []byte(strings.Join(bare, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	if level, _ := exposure(t, variant); level <= 3.0 {
		t.Errorf("a unit without the sandbox is rated %.1f too", level)
	}
}

// TestUnitCommandsRun runs the unit's ExecStart and ExecReload command lines
// (binary and config path replaced by the test's) with the pid file in a
// runtime folder as the unit's comment says: serve starts, and reload
// through the pid file reaches it.
func TestUnitCommandsRun(t *testing.T) {
	data, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	execLine := func(key string) []string {
		m := regexp.MustCompile(`(?m)^` + key + `=(.*)$`).FindStringSubmatch(string(data))
		if m == nil {
			t.Fatalf("unit has no %s=", key)
		}
		f := strings.Fields(m[1])
		if f[0] != "/usr/local/bin/sluice" {
			t.Fatalf("%s runs %s, not /usr/local/bin/sluice (which make install rewrites)", key, f[0])
		}
		return f[1:]
	}
	dir := t.TempDir()
	runDir := filepath.Join(dir, "run")
	os.Mkdir(runDir, 0o755)
	cfg := filepath.Join(dir, "sluice.yaml")
	writeFiles(t, dir, map[string]string{"sluice.yaml": "listen: [\"127.0.0.1:0\"]\npid_file: " + filepath.Join(runDir, "sluice.pid") +
		"\ncache_dir: " + filepath.Join(dir, "cache") + "\n"})
	subst := func(args []string) []string {
		for i, a := range args {
			args[i] = strings.ReplaceAll(a, "/etc/sluice/sluice.yaml", cfg)
		}
		return args
	}
	p := runSluice(t, dir, subst(execLine("ExecStart"))...)
	if _, err := os.Stat(filepath.Join(runDir, "sluice.pid")); err != nil {
		t.Fatalf("no pid file in the runtime folder: %v", err)
	}
	out, code := runCLI(t, dir, subst(execLine("ExecReload"))...)
	if code != 0 || !strings.Contains(out, "reload requested") {
		t.Fatalf("ExecReload: exit %d: %s", code, out)
	}
	p.waitLog(t, `rules reloaded`)
}

// TestSysusersCreatesUser: the sysusers.d entry creates the `sluice` system
// user the unit runs as, in a scratch root.
func TestSysusersCreatesUser(t *testing.T) {
	bin := requireTool(t, "systemd-sysusers")
	root := t.TempDir()
	os.Mkdir(filepath.Join(root, "etc"), 0o755)
	cmd := exec.Command(bin, "--root="+root, "-")
	f, err := os.Open("../contrib/sluice.sysusers")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd.Stdin = f
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("systemd-sysusers: %v\n%s", err, out)
	}
	passwd, _ := os.ReadFile(filepath.Join(root, "etc/passwd"))
	if !regexp.MustCompile(`(?m)^sluice:x:\d+:\d+:[^:]*:/var/lib/sluice:/usr/sbin/nologin$`).Match(passwd) {
		t.Errorf("passwd:\n%s", passwd)
	}
}

// TestManPages: `sluice man DIR` writes a section-1 page per command, and
// man(1) renders them.
func TestManPages(t *testing.T) {
	dir := t.TempDir()
	out := command(t, dir, []string{"SOURCE_DATE_EPOCH=1700000000"}, sluiceBin, "man", filepath.Join(dir, "man"))
	if !strings.HasPrefix(out, "wrote ") {
		t.Errorf("output: %s", out)
	}
	for _, page := range []string{"sluice", "sluice-serve", "sluice-users-add", "sluice-list-show", "sluice-reload", "sluice-man", "sluice-completion-bash"} {
		data, err := os.ReadFile(filepath.Join(dir, "man", page+".1"))
		if err != nil {
			t.Errorf("%s.1: %v", page, err)
			continue
		}
		if !strings.Contains(string(data), `.TH "SLUICE" "1" "Nov 2023" "Sluice `) {
			t.Errorf("%s.1 header:\n%.200s", page, data)
		}
	}
	man := requireTool(t, "man")
	rendered := command(t, dir, []string{"MANWIDTH=80", "MANPAGER=cat", "PAGER=cat"}, man, "-l", filepath.Join(dir, "man", "sluice-serve.1"))
	for _, want := range []string{"NAME", "sluice-serve - Run the proxy", "SYNOPSIS", "shutdown_grace", "SEE ALSO", "sluice(1)"} {
		if !strings.Contains(rendered, want) {
			t.Errorf("man -l sluice-serve.1 lacks %q:\n%s", want, rendered)
		}
	}
}

// TestMakeInstall: `make install DESTDIR=... PREFIX=/usr` lays out the
// binary, man pages, unit (pointing at the installed binary), sysusers
// entry and completions; the installed binary runs.
func TestMakeInstall(t *testing.T) {
	make := requireTool(t, "make")
	dest := t.TempDir()
	build := filepath.Join(t.TempDir(), "sluice")
	command(t, "..", nil, make, "install", "DESTDIR="+dest, "PREFIX=/usr", "BIN="+build)
	want := []string{
		"usr/bin/sluice",
		"usr/lib/systemd/system/sluice.service",
		"usr/lib/sysusers.d/sluice.conf",
		"usr/share/bash-completion/completions/sluice",
		"usr/share/fish/vendor_completions.d/sluice.fish",
		"usr/share/man/man1/sluice.1",
		"usr/share/man/man1/sluice-serve.1",
		"usr/share/man/man1/sluice-users-rm.1",
		"usr/share/zsh/site-functions/_sluice",
	}
	for _, w := range want {
		if _, err := os.Stat(filepath.Join(dest, w)); err != nil {
			t.Errorf("missing %s: %v", w, err)
		}
	}
	var outside []string
	filepath.WalkDir(dest, func(p string, d os.DirEntry, err error) error {
		if rel, _ := filepath.Rel(dest, p); !d.IsDir() && !strings.HasPrefix(rel, "usr/") {
			outside = append(outside, rel)
		}
		return nil
	})
	if len(outside) > 0 {
		t.Errorf("files outside PREFIX: %v", outside)
	}
	if st, err := os.Stat(filepath.Join(dest, "usr/bin/sluice")); err != nil || st.Mode().Perm() != 0o755 {
		t.Errorf("binary mode: %v %v", st, err)
	}
	unit, _ := os.ReadFile(filepath.Join(dest, "usr/lib/systemd/system/sluice.service"))
	if !strings.Contains(string(unit), "\nExecStart=/usr/bin/sluice serve ") || !strings.Contains(string(unit), "\nExecReload=/usr/bin/sluice reload ") ||
		strings.Contains(string(unit), "/usr/local") {
		t.Errorf("installed unit does not run /usr/bin/sluice:\n%s", unit)
	}
	if out := command(t, dest, nil, filepath.Join(dest, "usr/bin/sluice"), "version"); !strings.HasPrefix(out, "sluice ") {
		t.Errorf("installed binary: %s", out)
	}
	bash, _ := os.ReadFile(filepath.Join(dest, "usr/share/bash-completion/completions/sluice"))
	if !strings.Contains(string(bash), "__complete") {
		t.Errorf("bash completion does not call __complete:\n%.300s", bash)
	}
}

// TestCompletionThroughBinary: the real binary answers the completion
// scripts' __complete requests with categories and users.
func TestCompletionThroughBinary(t *testing.T) {
	users := htpasswdFile(t, "alice", "a")
	dir, cfg := writeConfig(t, "default: allow\nusers: "+users+"\ncategories:\n  social: [social.txt]\n  ads: [ads.txt]\n",
		map[string]string{"social.txt": "a.test\n", "ads.txt": "b.test\n"})
	if out, _ := runCLI(t, dir, "__complete", "list", "-c", cfg, "show", ""); !strings.HasPrefix(out, "ads\nsocial\n:4\n") {
		t.Errorf("categories: %q", out)
	}
	if out, _ := runCLI(t, dir, "__complete", "users", "-c", cfg, "rm", ""); !strings.HasPrefix(out, "alice\n:4\n") {
		t.Errorf("users: %q", out)
	}
}

// TestUnitVerifies: `systemd-analyze verify` accepts the unit (every
// directive known, the binary executable, the man pages of Documentation=
// present once `sluice man` wrote them).
func TestUnitVerifies(t *testing.T) {
	bin := requireTool(t, "systemd-analyze")
	dir := t.TempDir()
	data, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	unit := filepath.Join(dir, "sluice.service")
	if err := os.WriteFile(unit, []byte(strings.ReplaceAll(string(data), "/usr/local/bin/sluice", sluiceBin)), 0o644); err != nil {
		t.Fatal(err)
	}
	command(t, dir, nil, sluiceBin, "man", filepath.Join(dir, "man", "man1"))
	out := command(t, dir, []string{"MANPATH=" + filepath.Join(dir, "man")}, bin, "verify", unit)
	if strings.TrimSpace(out) != "" {
		t.Errorf("systemd-analyze verify:\n%s", out)
	}
}
