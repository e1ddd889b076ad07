package dialtest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
)

// SquidOptions configures a squid. The zero value is a plain HTTP squid
// that demands no credentials and knows only localhost.
type SquidOptions struct {
	// ID becomes squid's visible_hostname, so that its Via header tells
	// which squid forwarded a request. Empty leaves squid's default.
	ID string
	// Names resolve to 127.0.0.1 through squid's own hosts file, and
	// nowhere else; localhost always does.
	Names []string
	// User and Pass, when User is set, are demanded as Basic
	// Proxy-Authorization through squid's basic_ncsa_auth.
	User, Pass string
	// TLS makes squid an https:// upstream (https_port) with a fresh
	// self-signed certificate for 127.0.0.1, written to Proc.CA.
	TLS bool
	// Deny names domains that squid's own policy refuses (403,
	// ERR_ACCESS_DENIED), for plain requests and CONNECT alike.
	Deny []string
}

// StartSquid starts squid as an HTTP (or, with TLS, https) parent on
// loopback that accepts clients from 127.0.0.0/8 only. Its access log
// (Proc.LogFile) has one line per request or tunnel ("CONNECT host:port",
// "GET http://..."), written when it ends. Names it does not know go to
// 127.0.0.1:53, where nothing answers.
func StartSquid(t testing.TB, o SquidOptions) *Proc {
	t.Helper()
	p := &Proc{Name: "squid", Addr: FreeAddr(t), Scheme: "http", User: o.User, Pass: o.Pass}
	if o.ID != "" {
		p.Name += " " + o.ID
	}
	d := tempDir(t, "squid-"+o.ID)
	p.dir, p.LogFile = d, filepath.Join(d, "access.log")
	hosts := filepath.Join(d, "hosts")
	writeFile(t, hosts, "127.0.0.1 localhost "+strings.Join(o.Names, " ")+"\n")
	var conf strings.Builder
	if o.TLS {
		_, cert, key := SelfSigned(t)
		p.CA, p.Scheme = filepath.Join(d, "cert.pem"), "https"
		writeFile(t, p.CA, string(cert))
		writeFile(t, filepath.Join(d, "key.pem"), string(key))
		fmt.Fprintf(&conf, "https_port %s tls-cert=%s tls-key=%s/key.pem\n", p.Addr, p.CA, d)
	} else {
		fmt.Fprintf(&conf, "http_port %s\n", p.Addr)
	}
	if o.ID != "" {
		fmt.Fprintf(&conf, "visible_hostname %s\n", o.ID)
	}
	fmt.Fprintf(&conf, "pid_filename %s/squid.pid\ncache_log %s/cache.log\ncoredump_dir %s\n", d, d, d)
	fmt.Fprintf(&conf, "access_log stdio:%s\nhosts_file %s\n", p.LogFile, hosts)
	conf.WriteString(`cache deny all
buffered_logs off
cache_effective_user proxy
pinger_enable off
dns_nameservers 127.0.0.1
dns_timeout 2 seconds
shutdown_lifetime 0 seconds
acl loop src 127.0.0.0/8
`)
	if o.User != "" {
		pw := filepath.Join(d, "passwd")
		if out, err := exec.Command(requireTool(t, "htpasswd"), "-b", "-c", "-m", pw, o.User, o.Pass).CombinedOutput(); err != nil {
			t.Fatalf("dialtest: htpasswd: %v: %s", err, out)
		}
		os.Chmod(pw, 0o644)
		helper := "/usr/lib/squid/basic_ncsa_auth"
		if _, err := os.Stat(helper); err != nil {
			t.Fatalf("dialtest: squid's basic_ncsa_auth is missing (apt-get install squid): %v", err)
		}
		fmt.Fprintf(&conf, "auth_param basic program %s %s\nauth_param basic realm sluice-test\n", helper, pw)
		conf.WriteString("acl authed proxy_auth REQUIRED\nhttp_access deny !authed\n")
	}
	if len(o.Deny) > 0 {
		fmt.Fprintf(&conf, "acl denied dstdomain %s\nhttp_access deny denied\n", strings.Join(o.Deny, " "))
	}
	conf.WriteString("http_access allow loop\nhttp_access deny all\n")
	cf := filepath.Join(d, "squid.conf")
	writeFile(t, cf, conf.String())
	start(t, p, filepath.Join(d, "cache.log"), "squid", "-N", "-f", cf)
	return p
}

// Danted's username method (RFC 1929) checks the system password
// database, so the authenticating danted needs a real system user.
const (
	// DanteUser is the system user the authenticating danted accepts.
	DanteUser = "sluice-dtest"
	// DantePass is DanteUser's password.
	DantePass = "s3cret-pw"
	// danteHash is DantePass in SHA-512 crypt, made with
	// openssl passwd -6 -salt sluicedtest s3cret-pw
	danteHash = "$6$sluicedtest$8ukAG4zwTlFmjHzzSoR0CRJS/50gkgVSBiC6U9DHbdSEA.qmqJppAf9OiC9IiAUfAd3LryYj7ejFzo1VMhmE/1"
)

// EnsureDanteUser makes sure the system user DanteUser exists, with no
// home and no login shell, and that its password is DantePass; it fails t
// when it cannot (creating the user needs root). It changes nothing when
// both already hold, so it is quick and safe to call every time.
func EnsureDanteUser(t testing.TB) {
	t.Helper()
	if err := ensureDanteUser(); err != nil {
		t.Fatalf("dialtest: %v", err)
	}
}

func ensureDanteUser() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("danted with username auth needs system user %q with a known password; creating it needs root, and the tests run as uid %d (run them as root)", DanteUser, os.Geteuid())
	}
	if _, err := user.Lookup(DanteUser); err != nil {
		var unknown user.UnknownUserError
		if !errors.As(err, &unknown) {
			return fmt.Errorf("looking up user %s: %w", DanteUser, err)
		}
		out, err := exec.Command("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", DanteUser).CombinedOutput()
		var ee *exec.ExitError
		if err != nil && !(errors.As(err, &ee) && ee.ExitCode() == 9) { // 9: created meanwhile
			return fmt.Errorf("useradd %s: %v: %s", DanteUser, err, out)
		}
	}
	if hash, err := shadowHash(DanteUser); err != nil {
		return err
	} else if hash == danteHash {
		return nil
	}
	cmd := exec.Command("chpasswd", "--encrypted")
	cmd.Stdin = strings.NewReader(DanteUser + ":" + danteHash + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("chpasswd for %s: %v: %s", DanteUser, err, out)
	}
	if hash, err := shadowHash(DanteUser); err != nil {
		return err
	} else if hash != danteHash {
		return fmt.Errorf("chpasswd did not set the password of %s", DanteUser)
	}
	return nil
}

// shadowHash returns name's password field in /etc/shadow.
func shadowHash(name string) (string, error) {
	b, err := os.ReadFile("/etc/shadow")
	if err != nil {
		return "", fmt.Errorf("reading /etc/shadow: %w", err)
	}
	for line := range strings.Lines(string(b)) {
		f := strings.SplitN(strings.TrimSpace(line), ":", 3)
		if len(f) >= 2 && f[0] == name {
			return f[1], nil
		}
	}
	return "", fmt.Errorf("user %s has no entry in /etc/shadow", name)
}

// StartDante starts danted as a SOCKS5 (and SOCKS4) server for clients
// from 127.0.0.0/8. Without auth it demands nothing; with auth it demands
// RFC 1929 username and password of the system user DanteUser (see
// EnsureDanteUser), which are then Proc.User and Proc.Pass, and it runs
// its privileged part as root to read /etc/shadow. Its log (Proc.LogFile)
// has a line per connection it passes, naming the target as ip.port.
func StartDante(t testing.TB, auth bool) *Proc {
	t.Helper()
	p := &Proc{Name: "danted", Addr: FreeAddr(t), Scheme: "socks5"}
	name, method, rule := "dante", "none", ""
	if auth {
		EnsureDanteUser(t)
		p.Name, p.User, p.Pass = "danted (username auth)", DanteUser, DantePass
		name, method, rule = "dante-auth", "username", "\n\tsocksmethod: username"
	}
	p.dir = tempDir(t, name)
	p.LogFile = filepath.Join(p.dir, "danted.log")
	host, port, _ := net.SplitHostPort(p.Addr)
	conf := fmt.Sprintf(`logoutput: %s
internal: %s port = %s
external: lo
socksmethod: %s
clientmethod: none
user.privileged: root
user.unprivileged: nobody
client pass { from: 127.0.0.0/8 to: 0.0.0.0/0 }
socks pass {
	from: 127.0.0.0/8 to: 0.0.0.0/0%s
	log: connect
}
`, p.LogFile, host, port, method, rule)
	cf := filepath.Join(p.dir, "danted.conf")
	writeFile(t, cf, conf)
	start(t, p, p.LogFile, "danted", "-f", cf, "-p", filepath.Join(p.dir, "danted.pid"), "-N", "1")
	return p
}

// StartMicrosocks starts microsocks, a SOCKS5 server that demands user
// and pass (RFC 1929), or nothing when user is empty. It resolves names
// itself, so Proc.Scheme is socks5h. It logs nothing.
func StartMicrosocks(t testing.TB, user, pass string) *Proc {
	t.Helper()
	p := &Proc{Name: "microsocks", Addr: FreeAddr(t), Scheme: "socks5h", User: user, Pass: pass}
	p.dir = tempDir(t, "microsocks")
	host, port, _ := net.SplitHostPort(p.Addr)
	args := []string{"-i", host, "-p", port}
	if user != "" {
		args = append(args, "-u", user, "-P", pass)
	}
	start(t, p, "", "microsocks", args...)
	return p
}
