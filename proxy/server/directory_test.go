package server

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const ldapCfg = "listen: [\"0.0.0.0:3128\"]\ndefault: allow\nauth:\n  ldap:\n" +
	"    url: \"ldap://127.0.0.1:1\"\n    base_dn: \"dc=test\"\n    bind_dn: \"cn=svc,dc=test\"\n    bind_password_file: svc.pw\n"

// TestDirectoryRestrictsAccess: a directory, like users:, lets the proxy
// listen beyond loopback, and both front ends then require credentials.
func TestDirectoryRestrictsAccess(t *testing.T) {
	s, err := New(Options{Config: writeConfig(t, ldapCfg, map[string]string{"svc.pw": "pw\n"}), Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	st := s.state.Load()
	if st.dir == nil || st.http.Auth == nil || st.socks.Auth == nil {
		t.Fatalf("dir %v, HTTP auth %v, SOCKS auth %v: want all set", st.dir, st.http.Auth, st.socks.Auth)
	}
}

// TestReloadKeepsDirectory: a reload that changes nothing of the
// directory keeps its checker (its cache and failure limits); a new
// service password builds a new one; a password file that cannot be read
// fails the reload naming the line of ldap: and keeps the running state.
func TestReloadKeepsDirectory(t *testing.T) {
	cfg := writeConfig(t, ldapCfg, map[string]string{"svc.pw": "pw\n"})
	s, err := New(Options{Config: cfg, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	first := s.state.Load().dir
	os.WriteFile(cfg, []byte(ldapCfg+"rules:\n  - block: [x.test]\n"), 0o644)
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	if s.state.Load().dir != first {
		t.Error("a reload that changed only the rules replaced the directory checker")
	}
	pw := filepath.Join(filepath.Dir(cfg), "svc.pw")
	os.WriteFile(pw, []byte("new-pw\n"), 0o600)
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	second := s.state.Load().dir
	if second == first {
		t.Error("a new service password kept the old checker")
	}
	os.Remove(pw)
	err = s.Reload()
	if err == nil || !strings.Contains(err.Error(), "sluice.yaml:4: auth: ldap: bind_password_file: ") {
		t.Fatalf("reload without the password file: %v, want an error naming sluice.yaml:4", err)
	}
	if s.state.Load().dir != second {
		t.Error("a failed reload replaced the directory checker")
	}
}
