package dial

// Fixtures: real upstream proxies (squid, danted, microsocks) started once
// per test binary on free loopback ports, small in-test upstreams (an
// HTTP/HTTPS CONNECT proxy, a SOCKS4a server) and origins.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Credentials of the authenticating upstreams.
const (
	testUser = "alice"
	testPass = "s3cret-pw"
)

// fixtureDir holds the configs and logs of the shared upstreams. It is
// world-writable because squid drops to the proxy user and danted to
// nobody.
var (
	fixtureOnce sync.Once
	fixtureDir  string
	fixtureErr  error

	procsMu sync.Mutex
	procs   []*exec.Cmd
)

func sharedDir(t *testing.T) string {
	t.Helper()
	fixtureOnce.Do(func() {
		fixtureDir, fixtureErr = os.MkdirTemp("", "sluice-dial-")
		if fixtureErr == nil {
			fixtureErr = os.Chmod(fixtureDir, 0o777)
		}
	})
	if fixtureErr != nil {
		t.Fatalf("fixture dir: %v", fixtureErr)
	}
	return fixtureDir
}

// stopUpstreams ends every process the fixtures started (by process
// group id) and removes the fixture dir. TestMain calls it.
func stopUpstreams() {
	procsMu.Lock()
	defer procsMu.Unlock()
	for _, c := range procs {
		_ = syscall.Kill(-c.Process.Pid, syscall.SIGTERM)
		done := make(chan struct{})
		go func() { c.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(3 * time.Second):
			_ = syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
			<-done
		}
	}
	procs = nil
	if fixtureDir != "" {
		os.RemoveAll(fixtureDir)
	}
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startProc starts a program in its own process group and waits until
// addr accepts connections.
func startProc(t *testing.T, name, addr, logPath string, args ...string) error {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		return fmt.Errorf("%s is not installed (apt-get install squid dante-server microsocks apache2-utils): %w", name, err)
	}
	cmd := exec.Command(path, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	procsMu.Lock()
	procs = append(procs, cmd)
	procsMu.Unlock()
	for range 200 { // up to 10s
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	logText, _ := os.ReadFile(logPath)
	return fmt.Errorf("%s did not listen on %s; output: %s; log: %s", name, addr, out.String(), logText)
}

// upstream is a started shared upstream.
type upstream struct {
	once sync.Once
	url  *url.URL
	err  error
}

var (
	squidPlain, squidAuth, dante, danteAuth, micro upstream
)

func (u *upstream) get(t *testing.T, start func(t *testing.T) (*url.URL, error)) *url.URL {
	t.Helper()
	u.once.Do(func() { u.url, u.err = start(t) })
	if u.err != nil {
		t.Fatal(u.err)
	}
	return u.url
}

// leakName is a name only the upstreams resolve (squid through its own
// hosts file, the in-test upstreams through their maps).
const leakName = "leak.test"

func startSquid(t *testing.T, auth bool) (*url.URL, error) {
	dir := sharedDir(t)
	name := "squid"
	if auth {
		name = "squid-auth"
	}
	d := filepath.Join(dir, name)
	if err := os.MkdirAll(d, 0o777); err != nil {
		return nil, err
	}
	os.Chmod(d, 0o777)
	port := freePort(t)
	hosts := filepath.Join(d, "hosts")
	if err := os.WriteFile(hosts, []byte("127.0.0.1 localhost "+leakName+"\n"), 0o644); err != nil {
		return nil, err
	}
	var conf strings.Builder
	fmt.Fprintf(&conf, "http_port 127.0.0.1:%d\n", port)
	fmt.Fprintf(&conf, "pid_filename %s/squid.pid\ncache_log %s/cache.log\ncoredump_dir %s\n", d, d, d)
	fmt.Fprintf(&conf, "hosts_file %s\n", hosts)
	conf.WriteString(`cache deny all
access_log none
cache_effective_user proxy
pinger_enable off
dns_nameservers 127.0.0.1
shutdown_lifetime 0 seconds
acl loop src 127.0.0.0/8
`)
	if auth {
		htpasswd, err := exec.LookPath("htpasswd")
		if err != nil {
			return nil, fmt.Errorf("htpasswd is not installed (apt-get install apache2-utils): %w", err)
		}
		pw := filepath.Join(d, "passwd")
		if out, err := exec.Command(htpasswd, "-b", "-c", "-m", pw, testUser, testPass).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("htpasswd: %v: %s", err, out)
		}
		os.Chmod(pw, 0o644)
		helper := "/usr/lib/squid/basic_ncsa_auth"
		if _, err := os.Stat(helper); err != nil {
			return nil, fmt.Errorf("squid's basic_ncsa_auth is missing: %w", err)
		}
		fmt.Fprintf(&conf, "auth_param basic program %s %s\nauth_param basic realm sluice-test\n", helper, pw)
		conf.WriteString("acl authed proxy_auth REQUIRED\nhttp_access deny !authed\n")
	}
	conf.WriteString("http_access allow loop\nhttp_access deny all\n")
	cf := filepath.Join(d, "squid.conf")
	if err := os.WriteFile(cf, []byte(conf.String()), 0o644); err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	if err := startProc(t, "squid", addr, filepath.Join(d, "cache.log"), "-N", "-f", cf); err != nil {
		return nil, err
	}
	u := &url.URL{Scheme: "http", Host: addr}
	if auth {
		u.User = url.UserPassword(testUser, testPass)
	}
	return u, nil
}

// Danted's username method (RFC 1929) checks the system password
// database, so the authenticating danted needs a real system user.
const (
	danteUser = "sluice-dtest"
	// danteHash is testPass in SHA-512 crypt, made with
	// openssl passwd -6 -salt sluicedtest s3cret-pw
	danteHash = "$6$sluicedtest$8ukAG4zwTlFmjHzzSoR0CRJS/50gkgVSBiC6U9DHbdSEA.qmqJppAf9OiC9IiAUfAd3LryYj7ejFzo1VMhmE/1"
)

// ensureDanteUser makes sure danteUser exists, with no home and no login
// shell, and that its password is testPass. It changes nothing when both
// already hold, so it is quick and safe to run every time.
func ensureDanteUser() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("danted with username auth needs system user %q with a known password; creating it needs root, and the tests run as uid %d (run them as root)", danteUser, os.Geteuid())
	}
	if _, err := user.Lookup(danteUser); err != nil {
		var unknown user.UnknownUserError
		if !errors.As(err, &unknown) {
			return fmt.Errorf("looking up user %s: %w", danteUser, err)
		}
		out, err := exec.Command("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", danteUser).CombinedOutput()
		var ee *exec.ExitError
		if err != nil && !(errors.As(err, &ee) && ee.ExitCode() == 9) { // 9: created meanwhile
			return fmt.Errorf("useradd %s: %v: %s", danteUser, err, out)
		}
	}
	if hash, err := shadowHash(danteUser); err != nil {
		return err
	} else if hash == danteHash {
		return nil
	}
	cmd := exec.Command("chpasswd", "--encrypted")
	cmd.Stdin = strings.NewReader(danteUser + ":" + danteHash + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("chpasswd for %s: %v: %s", danteUser, err, out)
	}
	if hash, err := shadowHash(danteUser); err != nil {
		return err
	} else if hash != danteHash {
		return fmt.Errorf("chpasswd did not set the password of %s", danteUser)
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

// startDante starts danted as a SOCKS v4/v5 upstream; with auth it
// demands RFC 1929 username/password of the system user danteUser.
// user.privileged root lets it read /etc/shadow to check passwords.
func startDante(t *testing.T, auth bool) (*url.URL, error) {
	name, method, socksRule := "dante", "none", ""
	if auth {
		if err := ensureDanteUser(); err != nil {
			return nil, err
		}
		name, method, socksRule = "dante-auth", "username", " socksmethod: username"
	}
	d := filepath.Join(sharedDir(t), name)
	if err := os.MkdirAll(d, 0o777); err != nil {
		return nil, err
	}
	port := freePort(t)
	logf := filepath.Join(d, "danted.log")
	conf := fmt.Sprintf(`logoutput: %s
internal: 127.0.0.1 port = %d
external: lo
socksmethod: %s
clientmethod: none
user.privileged: root
user.unprivileged: nobody
client pass { from: 127.0.0.0/8 to: 0.0.0.0/0 }
socks pass { from: 127.0.0.0/8 to: 0.0.0.0/0%s }
`, logf, port, method, socksRule)
	cf := filepath.Join(d, "danted.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	if err := startProc(t, "danted", addr, logf, "-f", cf, "-p", filepath.Join(d, "danted.pid"), "-N", "1"); err != nil {
		return nil, err
	}
	u := &url.URL{Scheme: "socks5", Host: addr}
	if auth {
		u.User = url.UserPassword(danteUser, testPass)
	}
	return u, nil
}

func startMicrosocks(t *testing.T) (*url.URL, error) {
	port := freePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	if err := startProc(t, "microsocks", addr, "", "-i", "127.0.0.1", "-p", fmt.Sprint(port), "-u", testUser, "-P", testPass); err != nil {
		return nil, err
	}
	return &url.URL{Scheme: "socks5h", Host: addr, User: url.UserPassword(testUser, testPass)}, nil
}

// Accessors for the shared upstreams.
func squidURL(t *testing.T) *url.URL {
	return squidPlain.get(t, func(t *testing.T) (*url.URL, error) { return startSquid(t, false) })
}
func squidAuthURL(t *testing.T) *url.URL {
	return squidAuth.get(t, func(t *testing.T) (*url.URL, error) { return startSquid(t, true) })
}
func danteURL(t *testing.T) *url.URL {
	return dante.get(t, func(t *testing.T) (*url.URL, error) { return startDante(t, false) })
}

// danteAuthURL is the authenticating danted, as scheme (socks5 or
// socks5h) with danteUser's credentials.
func danteAuthURL(t *testing.T, scheme string) *url.URL {
	t.Helper()
	u := *danteAuth.get(t, func(t *testing.T) (*url.URL, error) { return startDante(t, true) })
	u.Scheme = scheme
	return &u
}
func microURL(t *testing.T) *url.URL { return micro.get(t, startMicrosocks) }

// server is a loopback listener whose handler goroutines are all waited
// for at cleanup.
type server struct {
	ln net.Listener
	wg sync.WaitGroup

	mu    sync.Mutex
	conns map[net.Conn]bool
}

func (s *server) addr() string { return s.ln.Addr().String() }
func (s *server) port() int    { return s.ln.Addr().(*net.TCPAddr).Port }

// serve accepts on ln until cleanup and runs handle per connection.
func serve(t *testing.T, ln net.Listener, handle func(net.Conn)) *server {
	t.Helper()
	s := &server{ln: ln, conns: map[net.Conn]bool{}}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns[c] = true
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer func() {
					c.Close()
					s.mu.Lock()
					delete(s.conns, c)
					s.mu.Unlock()
				}()
				handle(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// startOrigin starts an origin that sends banner as soon as a client
// connects (nothing if empty), then counts the bytes it reads: after each
// newline it answers "ack N\n", and when the client half-closes it answers
// "got N\n" and closes.
func startOrigin(t *testing.T, banner string) *server {
	t.Helper()
	return serve(t, listen(t), func(c net.Conn) {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if banner != "" {
			if _, err := io.WriteString(c, banner); err != nil {
				return
			}
		}
		var n int
		buf := make([]byte, 4096)
		for {
			m, err := c.Read(buf)
			for _, b := range buf[:m] {
				n++
				if b == '\n' {
					fmt.Fprintf(c, "ack %d\n", n)
				}
			}
			if err != nil {
				if errors.Is(err, io.EOF) {
					fmt.Fprintf(c, "got %d\n", n)
				}
				return
			}
		}
	})
}

// relayBoth copies both ways and half-closes each side at EOF.
func relayBoth(a, b net.Conn) {
	var wg sync.WaitGroup
	cp := func(dst, src net.Conn) {
		defer wg.Done()
		io.Copy(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		} else {
			dst.Close()
		}
	}
	wg.Add(2)
	go cp(a, b)
	go cp(b, a)
	wg.Wait()
}

// resolveTest maps the names only in-test upstreams know.
func resolveTest(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err == nil && (host == leakName || host == "localhost") {
		return net.JoinHostPort("127.0.0.1", port)
	}
	return addr
}

// connectProxy is an in-test HTTP CONNECT upstream. With eager set it
// waits for the target's first bytes and sends them in the same write as
// its 200, to prove the client keeps bytes read along with the response.
// With user set it demands Basic credentials.
type connectProxy struct {
	eager      bool
	user, pass string
	seen       chan string // CONNECT targets, if non-nil
}

func (p *connectProxy) handle(c net.Conn) {
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err != nil {
		return
	}
	var auth string
	for {
		h, err := br.ReadString('\n')
		if err != nil {
			return
		}
		if h == "\r\n" {
			break
		}
		if k, v, ok := strings.Cut(h, ":"); ok && strings.EqualFold(k, "Proxy-Authorization") {
			auth = strings.TrimSpace(v)
		}
	}
	f := strings.Fields(line)
	if len(f) != 3 || f[0] != "CONNECT" {
		io.WriteString(c, "HTTP/1.1 400 Bad Request\r\n\r\n")
		return
	}
	if p.seen != nil {
		p.seen <- f[1]
	}
	if p.user != "" && auth != basicAuth(url.UserPassword(p.user, p.pass)) {
		io.WriteString(c, "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"t\"\r\n\r\n")
		return
	}
	up, err := net.Dial("tcp", resolveTest(f[1]))
	if err != nil {
		io.WriteString(c, "HTTP/1.1 502 Bad Gateway\r\n\r\n")
		return
	}
	defer up.Close()
	ok := []byte("HTTP/1.1 200 Connection established\r\n\r\n")
	if p.eager {
		buf := make([]byte, 512)
		up.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _ := up.Read(buf)
		up.SetReadDeadline(time.Time{})
		ok = append(ok, buf[:n]...)
	}
	if _, err := c.Write(ok); err != nil {
		return
	}
	c.SetDeadline(time.Time{})
	if br.Buffered() > 0 {
		b, _ := br.Peek(br.Buffered())
		up.Write(b)
	}
	if tc, ok := c.(*tls.Conn); ok {
		relayBoth(tlsHalf{tc}, up)
		return
	}
	relayBoth(c, up)
}

// tlsHalf gives a *tls.Conn CloseWrite under the net.Conn interface.
type tlsHalf struct{ *tls.Conn }

// startConnectProxy starts p on loopback, over TLS when cert is set.
func startConnectProxy(t *testing.T, p *connectProxy, cert *tls.Certificate) *server {
	t.Helper()
	ln := listen(t)
	if cert != nil {
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{*cert}})
	}
	return serve(t, ln, p.handle)
}

// startSOCKS4a starts an in-test SOCKS4a upstream that resolves leakName
// itself and records the user ids it sees.
func startSOCKS4a(t *testing.T, users chan<- string) *server {
	t.Helper()
	return serve(t, listen(t), func(c net.Conn) {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(c)
		var head [8]byte
		if _, err := io.ReadFull(br, head[:]); err != nil || head[0] != 4 || head[1] != 1 {
			return
		}
		user, err := br.ReadString(0)
		if err != nil {
			return
		}
		if users != nil {
			users <- strings.TrimSuffix(user, "\x00")
		}
		port := int(head[2])<<8 | int(head[3])
		host := net.IP(head[4:8]).String()
		if head[4] == 0 && head[5] == 0 && head[6] == 0 && head[7] != 0 {
			name, err := br.ReadString(0)
			if err != nil {
				return
			}
			host = strings.TrimSuffix(name, "\x00")
		}
		up, err := net.Dial("tcp", resolveTest(net.JoinHostPort(host, fmt.Sprint(port))))
		if err != nil {
			c.Write([]byte{0, 91, 0, 0, 0, 0, 0, 0})
			return
		}
		defer up.Close()
		if _, err := c.Write([]byte{0, 90, 0, 0, 0, 0, 0, 0}); err != nil {
			return
		}
		c.SetDeadline(time.Time{})
		relayBoth(c, up)
	})
}

// selfSigned makes a certificate for 127.0.0.1 and localhost, and its PEM.
func selfSigned(t *testing.T) (tls.Certificate, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "sluice test upstream"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:              []string{"localhost"},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pemBytes
}

// mustURL parses s or fails the test.
func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// closedAddr is a loopback address where nothing listens.
func closedAddr(t *testing.T) string {
	t.Helper()
	return fmt.Sprintf("127.0.0.1:%d", freePort(t))
}

// countingLookup is a LookupHook that counts calls and finds nothing.
type countingLookup struct {
	mu    sync.Mutex
	names []string
}

func (l *countingLookup) hook(_ context.Context, host string) ([]netip.Addr, error) {
	l.mu.Lock()
	l.names = append(l.names, host)
	l.mu.Unlock()
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

func (l *countingLookup) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.names)
}

// tlsListener serves TLS with cert on ln.
func tlsListener(ln net.Listener, cert tls.Certificate) net.Listener {
	return tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}})
}
