package test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// squidUsersFile writes an htpasswd file as a Squid installation has it:
// users written by the real htpasswd -m (its default, $apr1$), -s, -d and
// -B, a comment, and a plain-text line that must be skipped without
// stopping the others. It returns the path and the plain line's number.
func squidUsersFile(t *testing.T) (string, int) {
	t.Helper()
	bin := requireTool(t, "htpasswd")
	path := filepath.Join(t.TempDir(), "squid.passwd")
	if err := os.WriteFile(path, []byte("# from /etc/squid/passwd\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, u := range []struct{ flag, name string }{{"-m", "md5"}, {"-s", "sha"}, {"-d", "des"}, {"-B", "bcrypt"}} {
		if out, err := exec.Command(bin, u.flag, "-b", path, u.name, u.name+"-pw").CombinedOutput(); err != nil {
			t.Fatalf("htpasswd %s: %v %s", u.flag, err, out)
		}
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(f, "plain:PlainTextSecret")
	f.Close()
	return path, 6
}

// TestSquidHtpasswd: every kind of a Squid htpasswd file authenticates
// through curl against the real binary, over HTTP and SOCKS5; a wrong
// password gets 407; the plain-text line is logged with file:line (and
// never its text) and does not stop the others.
func TestSquidHtpasswd(t *testing.T) {
	o := newOrigin(t, false)
	users, badLine := squidUsersFile(t)
	p := startSluice(t, "users: "+users+"\nhosts: {allowed.test: 127.0.0.1}\n", nil)
	url := "http://allowed.test:" + o.port + "/squid"

	for _, u := range []string{"md5", "sha", "des", "bcrypt"} {
		out, code := curl(t, "-x", "http://"+p.addr, "--proxy-user", u+":"+u+"-pw", url)
		if code != 0 || !strings.Contains(out, "path=/squid") {
			t.Errorf("%s over HTTP: curl exit %d: %s", u, code, out)
		}
		out, code = curl(t, "--socks5-hostname", p.addr, "--proxy-user", u+":"+u+"-pw", url)
		if code != 0 || !strings.Contains(out, "path=/squid") {
			t.Errorf("%s over SOCKS5: curl exit %d: %s", u, code, out)
		}
		out, _ = curl(t, "-o", "/dev/null", "-w", "%{http_code}", "-x", "http://"+p.addr, "--proxy-user", u+":wrong-pw", url)
		if out != "407" {
			t.Errorf("%s with a wrong password: %s, want 407", u, out)
		}
	}
	out, _ := curl(t, "-o", "/dev/null", "-w", "%{http_code}", "-x", "http://"+p.addr, "--proxy-user", "plain:PlainTextSecret", url)
	if out != "407" {
		t.Errorf("the plain-text line authenticated: %s", out)
	}
	p.waitLog(t, regexp.QuoteMeta(fmt.Sprintf("%s:%d:", users, badLine))+`.*unsupported hash kind`)
	log := p.Log()
	if strings.Contains(log, "PlainTextSecret") || strings.Contains(log, "-pw") {
		t.Errorf("a password reached the log:\n%s", log)
	}
	data, _ := os.ReadFile(users)
	for _, line := range strings.Split(string(data), "\n") {
		if _, hash, ok := strings.Cut(line, ":"); ok && strings.Contains(log, hash) {
			t.Errorf("hash %s reached the log:\n%s", hash, log)
		}
	}
}

// TestUsersListMarksWeak: `sluice users list` marks the MD5, SHA-1 and DES
// users weak, and `users add` re-sets one with bcrypt, which clears it;
// `sluice config validate` shows the skipped line as a warning with file
// and line and still exits 0.
func TestUsersListMarksWeak(t *testing.T) {
	users, badLine := squidUsersFile(t)
	dir, cfg := writeConfig(t, "default: allow\nusers: "+users+"\n", nil)

	out, code := runCLI(t, dir, "users", "--file", users, "list")
	want := "md5\tmd5, weak: re-set with sluice users add\n" +
		"sha\tsha1, weak: re-set with sluice users add\n" +
		"des\tdes, weak: re-set with sluice users add\n" +
		"bcrypt\n"
	warning := fmt.Sprintf("warning: %s:%d: user plain: unsupported hash kind", users, badLine)
	if code != 0 || !strings.Contains(out, want) || !strings.Contains(out, warning) {
		t.Fatalf("users list: exit %d:\n%s\nwant:\n%s%s", code, out, want, warning)
	}
	if strings.Contains(out, "PlainTextSecret") {
		t.Errorf("users list shows the plain line's text:\n%s", out)
	}

	out, code = runCLI(t, dir, "config", "validate", "-c", cfg)
	if code != 0 || !strings.Contains(out, "warning: users: "+fmt.Sprintf("%s:%d:", users, badLine)) || !strings.Contains(out, ": ok:") {
		t.Fatalf("config validate: exit %d:\n%s", code, out)
	}

	add := exec.Command(sluiceBin, "users", "-c", cfg, "add", "md5", "--password-stdin")
	add.Stdin = strings.NewReader("new-md5-pw\n")
	if out, err := add.CombinedOutput(); err != nil {
		t.Fatalf("users add: %v %s", err, out)
	}
	out, _ = runCLI(t, dir, "users", "-c", cfg, "list")
	if !strings.Contains(out, "\nmd5\nsha\tsha1, weak") || strings.Contains(out, "md5\tmd5") {
		t.Errorf("after re-setting md5 with users add:\n%s", out)
	}
	data, _ := os.ReadFile(users)
	if !regexp.MustCompile(`(?m)^md5:\$2[aby]\$`).Match(data) {
		t.Errorf("users add did not write bcrypt:\n%s", data)
	}
}
