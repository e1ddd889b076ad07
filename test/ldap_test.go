package test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluiceproxy/sluice/proxy/dial/dialtest"
)

// ldapConfig is a school's config: directory users, a local htpasswd user
// (principal) shadowing a directory name, students kept from games.test
// and teachers from allowed.test.
func ldapConfig(t *testing.T, s *slapd) string {
	t.Helper()
	users := htpasswdFile(t, "principal", "local-pw")
	pw := filepath.Join(t.TempDir(), "service.pw")
	if err := os.WriteFile(pw, []byte(ldapServicePW+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return `default: allow
users: ` + users + `
auth:
  ldap:
    url: ` + s.url + `
    bind_dn: ` + ldapServiceDN + `
    bind_password_file: ` + pw + `
    base_dn: ` + ldapPeopleDN + `
    user_filter: "(uid={user})"
    group_attribute: memberOf
    groups:
      students: "` + ldapStudentsDN + `"
      teachers: "` + strings.ToUpper(ldapTeachersDN) + `"
    cache: 5m
hosts: {allowed.test: 127.0.0.1, games.test: 127.0.0.1}
rules:
  - block: [games.test]
    groups: [students]
  - block: [allowed.test]
    groups: [teachers]
`
}

// proxyCode fetches url through the HTTP proxy at addr as user:pass and
// returns the status code curl saw.
func proxyCode(t *testing.T, addr, userPass, url string) string {
	t.Helper()
	out, _ := curl(t, "-o", "/dev/null", "-w", "%{http_code}", "-x", "http://"+addr, "--proxy-user", userPass, url)
	return out
}

// TestLDAPUsersAndGroups runs a real slapd with users in groups: right
// passwords pass over HTTP and SOCKS5, wrong and empty ones (an LDAP bind
// with an empty password is anonymous, and succeeds) are refused, the
// students' rule applies to the directory's students only, a name in the
// htpasswd file is decided by the file, and with slapd stopped a user not
// yet cached is refused (407, SOCKS failure) with a log line, reaching no
// origin. No password reaches the log.
func TestLDAPUsersAndGroups(t *testing.T) {
	s := startSlapd(t)
	o := newCountOrigin(t, "127.0.0.1:0")
	p := startSluice(t, ldapConfig(t, s), nil)
	allowed := "http://allowed.test:" + o.port + "/ok"
	games := "http://games.test:" + o.port + "/games"
	student := "student:" + ldapStudentPW

	// Right password over HTTP and SOCKS5.
	if out, code := curl(t, "-x", "http://"+p.addr, "--proxy-user", student, allowed); code != 0 || !strings.Contains(out, "/ok") {
		t.Errorf("student over HTTP: curl exit %d: %s\nslapd:\n%s", code, out, s.Log())
	}
	if out, code := curl(t, "--socks5-hostname", p.addr, "--proxy-user", student, allowed); code != 0 || !strings.Contains(out, "/ok") {
		t.Errorf("student over SOCKS5: curl exit %d: %s", code, out)
	}

	// The group rules: students are blocked from games.test, over both
	// front ends, without the origin seeing a connection; teachers from
	// allowed.test but not games.test (the teachers group DN is configured
	// in upper case: DNs compare case-insensitively).
	before := o.accepts.Load()
	if code := proxyCode(t, p.addr, student, games); code != "403" {
		t.Errorf("student to games.test over HTTP: %s, want 403", code)
	}
	if out, code := curl(t, "--socks5-hostname", p.addr, "--proxy-user", student, games); code == 0 {
		t.Errorf("student to games.test over SOCKS5 passed: %s", out)
	}
	if n := o.accepts.Load(); n != before {
		t.Errorf("the origin accepted %d connections for a blocked student", n-before)
	}
	teacher := "teacher:" + ldapTeacherPW
	if code := proxyCode(t, p.addr, teacher, allowed); code != "403" {
		t.Errorf("teacher to allowed.test over HTTP: %s, want 403", code)
	}
	if out, code := curl(t, "--socks5-hostname", p.addr, "--proxy-user", teacher, games); code != 0 || !strings.Contains(out, "/games") {
		t.Errorf("teacher to games.test over SOCKS5: curl exit %d: %s", code, out)
	}
	// principal is in the htpasswd file too: the file decides, so the
	// directory password is refused and the local one passes, without the
	// directory's teachers group.
	if code := proxyCode(t, p.addr, "principal:"+ldapPrincipalPW, allowed); code != "407" {
		t.Errorf("principal with the directory password: %s, want 407 (the htpasswd file decides)", code)
	}
	if out, code := curl(t, "-x", "http://"+p.addr, "--proxy-user", "principal:local-pw", allowed); code != 0 || !strings.Contains(out, "/ok") {
		t.Errorf("principal with the htpasswd password to allowed.test: curl exit %d: %s", code, out)
	}
	if out, code := curl(t, "--socks5-hostname", p.addr, "--proxy-user", "latecomer:"+ldapLatecomerPW, games); code == 0 {
		t.Errorf("latecomer (a student) to games.test over SOCKS5 passed: %s", out)
	}

	// Wrong, empty and injected credentials.
	before = o.accepts.Load()
	for _, up := range []string{
		"student:wrong", "student:", "nopass:", "nobody:" + ldapStudentPW,
		"*:" + ldapStudentPW, "stud*:" + ldapStudentPW, "student)(uid=*:" + ldapStudentPW,
	} {
		if code := proxyCode(t, p.addr, up, allowed); code != "407" {
			t.Errorf("%q over HTTP: %s, want 407", up, code)
		}
	}
	for _, up := range []string{"student:wrong", "nopass:", "*:" + ldapStudentPW} {
		if out, code := curl(t, "--socks5-hostname", p.addr, "--proxy-user", up, allowed); code == 0 {
			t.Errorf("%q over SOCKS5 passed: %s", up, out)
		}
	}
	if n := o.accepts.Load(); n != before {
		t.Errorf("the origin accepted %d connections for refused credentials", n-before)
	}
	// An empty password is refused before any bind (not as an outage).
	p.waitLog(t, `authentication failed.*"user":"nopass".*empty user name or password`)

	// The directory goes away: newcomer's right password, never checked
	// before, is refused over both front ends, with a log line; nothing
	// reaches the origin. A password confirmed within `cache` still works.
	s.stop()
	before = o.accepts.Load()
	newcomer := "newcomer:" + ldapNewcomerPW
	if code := proxyCode(t, p.addr, newcomer, allowed); code != "407" {
		t.Errorf("with slapd stopped, an unchecked password over HTTP: %s, want 407", code)
	}
	if out, code := curl(t, "--socks5-hostname", p.addr, "--proxy-user", newcomer, allowed); code == 0 {
		t.Errorf("with slapd stopped, an unchecked password over SOCKS5 passed: %s", out)
	}
	if n := o.accepts.Load(); n != before {
		t.Errorf("with slapd stopped, the origin accepted %d connections", n-before)
	}
	p.waitLog(t, `directory unavailable.*newcomer`)
	if code := proxyCode(t, p.addr, student, allowed); code != "200" {
		t.Errorf("with slapd stopped, the cached student: %s, want 200", code)
	}
	if code := proxyCode(t, p.addr, student, games); code != "403" {
		t.Errorf("with slapd stopped, the cached student to games.test: %s, want 403 (groups are cached too)", code)
	}

	log := p.Log()
	for _, secret := range []string{ldapStudentPW, ldapTeacherPW, ldapLatecomerPW, ldapServicePW, "local-pw", ldapNewcomerPW, ldapPrincipalPW} {
		if strings.Contains(log, secret) {
			t.Errorf("password %q reached the log:\n%s", secret, log)
		}
	}
}

// TestLDAPFailureLimit: after five wrong passwords from one client, a
// directory user's right password is refused too (the pair is limited
// before the directory is asked), while another user from the same client
// still passes.
func TestLDAPFailureLimit(t *testing.T) {
	s := startSlapd(t)
	o := newCountOrigin(t, "127.0.0.1:0")
	p := startSluice(t, ldapConfig(t, s), nil)
	allowed := "http://allowed.test:" + o.port + "/ok"
	for i := range 5 {
		if code := proxyCode(t, p.addr, "latecomer:wrong", allowed); code != "407" {
			t.Fatalf("wrong password %d: %s, want 407", i+1, code)
		}
	}
	if code := proxyCode(t, p.addr, "latecomer:"+ldapLatecomerPW, allowed); code != "407" {
		t.Errorf("the right password of a limited pair: %s, want 407", code)
	}
	p.waitLog(t, `authentication failed.*"user":"latecomer".*rate limited`)
	if code := proxyCode(t, p.addr, "student:"+ldapStudentPW, allowed); code != "200" {
		t.Errorf("another user from the same client: %s, want 200", code)
	}
}

// TestLDAPConfigFiles: the README's directory example validates beside
// its password and CA files; without the password file, `config
// validate` and `serve` fail naming the config's line of ldap:.
func TestLDAPConfigFiles(t *testing.T) {
	example := readmeBlock(t, "### Directory users (LDAP, Active Directory)")
	_, caPEM, _ := dialtest.SelfSigned(t)
	dir := t.TempDir()
	example = strings.ReplaceAll(example, "/etc/sluice/", dir+"/")
	example = "default: allow\n" + example
	cfgDir, path := writeConfig(t, example, nil)
	writeFiles(t, dir, map[string]string{"school-ca.pem": string(caPEM)})
	ldapLine := 1 + strings.Count(example[:strings.Index(example, "\n  ldap:")+1], "\n")
	out, code := runCLI(t, cfgDir, "config", "validate", "--config", path)
	if code != 2 || !strings.Contains(out, fmt.Sprintf("%s:%d: auth: ldap: bind_password_file: ", path, ldapLine)) {
		t.Errorf("without the password file: exit %d, want 2 naming %s:%d:\n%s", code, path, ldapLine, out)
	}
	writeFiles(t, dir, map[string]string{"ldap.pw": "service-secret\n"})
	out, code = runCLI(t, cfgDir, "config", "validate", "--config", path)
	if code != 0 || !strings.Contains(out, ": ok: 1 rules") {
		t.Errorf("README example: exit %d:\n%s", code, out)
	}
	if strings.Contains(out, "service-secret") {
		t.Errorf("the service password reached the output:\n%s", out)
	}
	writeFiles(t, dir, map[string]string{"school-ca.pem": "not a certificate\n"})
	out, code = runCLI(t, cfgDir, "config", "validate", "--config", path)
	if code != 2 || !strings.Contains(out, fmt.Sprintf("%s:%d: auth: ldap: tls_ca: ", path, ldapLine)) {
		t.Errorf("with a bad CA file: exit %d, want 2 naming %s:%d:\n%s", code, path, ldapLine, out)
	}
}

// TestLDAPTLS: with tls_ca naming the CA of slapd's certificate, users
// are checked over StartTLS on ldap:// and over ldaps://; with a CA that
// did not sign it, nobody passes and the log says the directory was
// unavailable.
func TestLDAPTLS(t *testing.T) {
	s := startSlapd(t)
	o := newCountOrigin(t, "127.0.0.1:0")
	_, otherCA, _ := dialtest.SelfSigned(t)
	allowed := "http://allowed.test:" + o.port + "/ok"
	for _, c := range []struct {
		name, url, extra string
		ca               []byte
		want             string
	}{
		{"starttls", s.url, "    starttls: true\n", s.caPEM, "200"},
		{"starttls, URL with a slash", s.url + "/", "    starttls: true\n", s.caPEM, "200"},
		{"ldaps", s.ldaps, "", s.caPEM, "200"},
		{"starttls, wrong CA", s.url, "    starttls: true\n", otherCA, "407"},
		{"ldaps, wrong CA", s.ldaps, "", otherCA, "407"},
	} {
		t.Run(c.name, func(t *testing.T) {
			config := ldapConfig(t, s)
			config = strings.Replace(config, "    url: "+s.url+"\n", "    url: "+c.url+"\n"+c.extra+"    tls_ca: ca.pem\n", 1)
			p := startSluice(t, config, map[string]string{"ca.pem": string(c.ca)})
			if code := proxyCode(t, p.addr, "student:"+ldapStudentPW, allowed); code != c.want {
				t.Errorf("student: %s, want %s\n%s", code, c.want, p.Log())
			}
			if c.want == "407" {
				p.waitLog(t, `directory unavailable.*certificate`)
			}
		})
	}
}

// TestLDAPAmbiguousFilter: a user_filter that matches several entries
// refuses everybody (with the reason in the log) rather than binding as
// whichever entry came first.
func TestLDAPAmbiguousFilter(t *testing.T) {
	s := startSlapd(t)
	o := newCountOrigin(t, "127.0.0.1:0")
	config := strings.Replace(ldapConfig(t, s), `user_filter: "(uid={user})"`,
		`user_filter: "(|(uid={user})(objectClass=inetOrgPerson))"`, 1)
	p := startSluice(t, config, nil)
	if code := proxyCode(t, p.addr, "student:"+ldapStudentPW, "http://allowed.test:"+o.port+"/"); code != "407" {
		t.Errorf("student with an ambiguous filter: %s, want 407", code)
	}
	p.waitLog(t, `authentication failed.*"user":"student".*matches several entries`)
}
