package main

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluiceproxy/sluice/proxy/auth"
)

func TestUsersAddListRm(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"sluice.yaml": "default: allow\nusers: users.htpasswd   # bcrypt only\n",
	})
	cfg := filepath.Join(dir, "sluice.yaml")
	file := filepath.Join(dir, "users.htpasswd")

	for _, u := range []struct{ name, pw string }{{"alice", "s3cret pass\n"}, {"bob", "hunter2\r\n"}} {
		out, err := run(t, strings.NewReader(u.pw), "users", "-c", cfg, "add", u.name, "--password-stdin")
		if err != nil {
			t.Fatalf("add %s: %v", u.name, err)
		}
		if want := "added " + u.name + " to " + file + "\n"; out != want {
			t.Errorf("add output %q, want %q", out, want)
		}
	}
	fi, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	if strings.Contains(readText(t, file), "s3cret") {
		t.Error("password stored in clear")
	}
	if out := mustRun(t, "users", "-c", cfg, "list"); out != "alice\nbob\n" {
		t.Errorf("list = %q", out)
	}
	f, err := auth.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	lo := netip.MustParseAddr("127.0.0.1")
	if !f.Authenticate(lo, "alice", "s3cret pass") || !f.Authenticate(lo, "bob", "hunter2") {
		t.Error("the stored hashes do not verify the passwords given on stdin")
	}

	out, err := run(t, strings.NewReader("changed\n"), "users", "--file", file, "add", "alice", "--password-stdin")
	if err != nil || !strings.HasPrefix(out, "changed the password of alice") {
		t.Errorf("change: %q, %v", out, err)
	}

	if out := mustRun(t, "users", "-c", cfg, "rm", "alice"); out != "removed alice from "+file+"\n" {
		t.Errorf("rm output %q", out)
	}
	if out := mustRun(t, "users", "-c", cfg, "list"); out != "bob\n" {
		t.Errorf("list after rm = %q", out)
	}
	if _, err := run(t, nil, "users", "-c", cfg, "rm", "alice"); exitCode(err) != 1 {
		t.Errorf("rm of a missing user: exit %d, %v", exitCode(err), err)
	}
	if fi, _ := os.Stat(file); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode after rm %v, want 0600", fi.Mode().Perm())
	}
}

func TestUsersErrors(t *testing.T) {
	dir := writeFiles(t, map[string]string{"sluice.yaml": "listen: 127.0.0.1:3128\n"})
	cfg := filepath.Join(dir, "sluice.yaml")
	file := filepath.Join(dir, "users")
	tests := []struct {
		name  string
		stdin string
		args  []string
		code  int
		msg   string
	}{
		{"no file", "", []string{"users", "list"}, 2, "--file"},
		{"config without users", "", []string{"users", "-c", cfg, "list"}, 2, "no users: entry"},
		{"empty password", "\n", []string{"users", "-f", file, "add", "carol", "--password-stdin"}, 2, "empty password"},
		{"no stdin", "", []string{"users", "-f", file, "add", "carol", "--password-stdin"}, 2, "empty password"},
		{"too long", strings.Repeat("x", 73) + "\n", []string{"users", "-f", file, "add", "carol", "--password-stdin"}, 2, "longer than 72"},
		{"no terminal", "pw\n", []string{"users", "-f", file, "add", "carol"}, 2, "not a terminal"},
		{"bad name", "pw\n", []string{"users", "-f", file, "add", "a:b", "--password-stdin"}, 2, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := run(t, strings.NewReader(tt.stdin), tt.args...)
			if got := exitCode(err); got != tt.code {
				t.Errorf("exit %d (%v), want %d", got, err, tt.code)
			}
			if err != nil && !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %q lacks %q", err, tt.msg)
			}
			if _, err := os.Stat(file); err == nil {
				t.Error("users file written")
			}
		})
	}
}
