package test

// Fixtures for the upstream tests: real squid, danted and microsocks on
// free loopback ports, started per test and stopped (by their own process
// group) at its cleanup; an origin that echoes the headers it received; an
// origin that speaks first.

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Credentials of the authenticating upstreams. They are distinctive so that
// a search of Sluice's log for them cannot match anything else.
const (
	upUser    = "alice"
	upPass    = "Pw-7q2ZxK9"
	upBadPass = "Wrong-4hT8mV"
)

// upstreamDir returns a world-writable temp folder, removed at cleanup:
// squid drops to the proxy user and danted to nobody, and t.TempDir's
// parents are not theirs to enter.
func upstreamDir(t *testing.T, name string) string {
	t.Helper()
	d, err := os.MkdirTemp("", "sluice-up-"+name+"-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(d, 0o777); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// freeAddr returns a loopback address that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// upProc is a running upstream proxy.
type upProc struct {
	name string // program
	addr string // 127.0.0.1:port
	log  string // file with one line per connection or request
	ca   string // PEM file of its certificate, for https upstreams
}

// port returns the upstream's port.
func (u *upProc) port() string {
	_, p, _ := net.SplitHostPort(u.addr)
	return p
}

// logText returns the upstream's log so far.
func (u *upProc) logText() string {
	b, _ := os.ReadFile(u.log)
	return string(b)
}

// waitLog waits (up to 5 s) until the upstream's log matches re at least n
// times, and fails the test otherwise. Logs are written after the request
// is answered, so a bounded poll is needed.
func (u *upProc) waitLog(t *testing.T, re string, n int) {
	t.Helper()
	rx := regexp.MustCompile(re)
	for range 250 {
		if len(rx.FindAllStringIndex(u.logText(), -1)) >= n {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s log (%s) never matched %q %d times; log:\n%s", u.name, u.log, re, n, u.logText())
}

// count returns how many times re matches the upstream's log now.
func (u *upProc) count(re string) int {
	return len(regexp.MustCompile(re).FindAllStringIndex(u.logText(), -1))
}

// startProcess runs a program in its own process group, waits (up to 10 s)
// until addr accepts connections and stops the group at cleanup.
func startProcess(t *testing.T, addr string, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(requireTool(t, name), args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
	})
	for range 200 {
		select {
		case <-done:
			t.Fatalf("%s exited before listening on %s: %v\n%s", name, addr, cmd.ProcessState, out.String())
		default:
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s did not listen on %s within 10s:\n%s", name, addr, out.String())
}

// syncBuffer is a bytes.Buffer safe for a process's output.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// squidOpts configures a squid.
type squidOpts struct {
	// id becomes squid's visible_hostname, so that its Via header tells
	// which squid forwarded a request.
	id string
	// names resolve to 127.0.0.1 through squid's own hosts file, and
	// nowhere else.
	names []string
	// auth requires upUser/upPass through basic_ncsa_auth.
	auth bool
	// tls makes squid an https:// upstream (https_port) with a fresh
	// self-signed certificate for 127.0.0.1, written to upProc.ca.
	tls bool
}

// startSquid starts squid as an HTTP parent on loopback. Its access log
// has one line per request or tunnel ("CONNECT host:port", "GET http://...").
// Names it does not know go to 127.0.0.1:53, where nothing answers.
func startSquid(t *testing.T, o squidOpts) *upProc {
	t.Helper()
	d := upstreamDir(t, "squid-"+o.id)
	addr := freeAddr(t)
	hosts := filepath.Join(d, "hosts")
	writeFile(t, hosts, "127.0.0.1 localhost "+strings.Join(o.names, " ")+"\n")
	var conf strings.Builder
	var ca string
	if o.tls {
		cert, key := selfSignedPEM(t)
		ca = filepath.Join(d, "cert.pem")
		writeFile(t, ca, string(cert))
		writeFile(t, filepath.Join(d, "key.pem"), string(key))
		fmt.Fprintf(&conf, "https_port %s tls-cert=%s tls-key=%s/key.pem\n", addr, ca, d)
	} else {
		fmt.Fprintf(&conf, "http_port %s\n", addr)
	}
	fmt.Fprintf(&conf, "visible_hostname %s\n", o.id)
	fmt.Fprintf(&conf, "pid_filename %s/squid.pid\ncache_log %s/cache.log\ncoredump_dir %s\n", d, d, d)
	fmt.Fprintf(&conf, "access_log stdio:%s/access.log\nhosts_file %s\n", d, hosts)
	conf.WriteString(`cache deny all
buffered_logs off
cache_effective_user proxy
pinger_enable off
dns_nameservers 127.0.0.1
dns_timeout 2 seconds
shutdown_lifetime 0 seconds
acl loop src 127.0.0.0/8
`)
	if o.auth {
		pw := filepath.Join(d, "passwd")
		if out, err := exec.Command(requireTool(t, "htpasswd"), "-b", "-c", "-m", pw, upUser, upPass).CombinedOutput(); err != nil {
			t.Fatalf("htpasswd: %v: %s", err, out)
		}
		os.Chmod(pw, 0o644)
		helper := "/usr/lib/squid/basic_ncsa_auth"
		if _, err := os.Stat(helper); err != nil {
			t.Fatalf("squid's basic_ncsa_auth is missing (apt-get install squid): %v", err)
		}
		fmt.Fprintf(&conf, "auth_param basic program %s %s\nauth_param basic realm sluice-test\n", helper, pw)
		conf.WriteString("acl authed proxy_auth REQUIRED\nhttp_access deny !authed\n")
	}
	conf.WriteString("http_access allow loop\nhttp_access deny all\n")
	cf := filepath.Join(d, "squid.conf")
	writeFile(t, cf, conf.String())
	startProcess(t, addr, "squid", "-N", "-f", cf)
	return &upProc{name: "squid " + o.id, addr: addr, log: filepath.Join(d, "access.log"), ca: ca}
}

// startDante starts danted as a SOCKS5 (and SOCKS4) server without
// authentication. Its log has a line per connection it passes, naming the
// target address as ip.port.
func startDante(t *testing.T) *upProc {
	t.Helper()
	d := upstreamDir(t, "dante")
	addr := freeAddr(t)
	host, port, _ := net.SplitHostPort(addr)
	logf := filepath.Join(d, "danted.log")
	conf := fmt.Sprintf(`logoutput: %s
internal: %s port = %s
external: lo
socksmethod: none
clientmethod: none
user.privileged: root
user.unprivileged: nobody
client pass { from: 127.0.0.0/8 to: 0.0.0.0/0 }
socks pass { from: 127.0.0.0/8 to: 0.0.0.0/0 log: connect }
`, logf, host, port)
	cf := filepath.Join(d, "danted.conf")
	writeFile(t, cf, conf)
	startProcess(t, addr, "danted", "-f", cf, "-p", filepath.Join(d, "danted.pid"), "-N", "1")
	return &upProc{name: "danted", addr: addr, log: logf}
}

// startMicrosocks starts microsocks, a SOCKS5 server that demands
// upUser/upPass. It logs nothing.
func startMicrosocks(t *testing.T) *upProc {
	t.Helper()
	addr := freeAddr(t)
	host, port, _ := net.SplitHostPort(addr)
	startProcess(t, addr, "microsocks", "-i", host, "-p", port, "-u", upUser, "-P", upPass)
	return &upProc{name: "microsocks", addr: addr}
}

// selfSignedPEM makes a CA certificate for 127.0.0.1 and its key, as PEM.
func selfSignedPEM(t *testing.T) (cert, key []byte) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "sluice test upstream"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// echoOrigin is a plain HTTP origin on loopback that answers with the
// request line and every header it received, one "hdr Name: value" line
// each, and counts its requests.
type echoOrigin struct {
	*httptest.Server
	port string
	hits atomic.Int64
}

func newEchoOrigin(t *testing.T) *echoOrigin {
	t.Helper()
	o := &echoOrigin{}
	o.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.hits.Add(1)
		var b strings.Builder
		fmt.Fprintf(&b, "hello from echo host=%s path=%s\n", r.Host, r.URL.Path)
		names := slices.Sorted(func(yield func(string) bool) {
			for k := range r.Header {
				if !yield(k) {
					return
				}
			}
		})
		for _, k := range names {
			for _, v := range r.Header[k] {
				fmt.Fprintf(&b, "hdr %s: %s\n", k, v)
			}
		}
		io.WriteString(w, b.String())
	}))
	t.Cleanup(o.Close)
	_, o.port, _ = net.SplitHostPort(o.Listener.Addr().String())
	return o
}

// echoHeader returns the values of the header named name in an echo body,
// joined by ", ", or "" when the origin did not receive it.
func echoHeader(body, name string) string {
	var vals []string
	prefix := "hdr " + http.CanonicalHeaderKey(name) + ": "
	for line := range strings.SplitSeq(body, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimRight(line, "\r"), prefix); ok {
			vals = append(vals, v)
		}
	}
	return strings.Join(vals, ", ")
}

// bannerOrigin is a TCP server that speaks first: it sends banner as soon
// as a client connects, then answers "ack N\n" after each newline it reads
// (N bytes read so far) and "got N\n" when the client half-closes, then
// closes.
type bannerOrigin struct {
	ln   net.Listener
	port string
	wg   sync.WaitGroup
}

func startBanner(t *testing.T, banner string) *bannerOrigin {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &bannerOrigin{ln: ln}
	_, b.port, _ = net.SplitHostPort(ln.Addr().String())
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	b.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			b.wg.Go(func() {
				defer func() {
					c.Close()
					mu.Lock()
					delete(conns, c)
					mu.Unlock()
				}()
				c.SetDeadline(time.Now().Add(15 * time.Second))
				if _, err := io.WriteString(c, banner); err != nil {
					return
				}
				n := 0
				buf := make([]byte, 4096)
				for {
					m, err := c.Read(buf)
					for _, ch := range buf[:m] {
						n++
						if ch == '\n' {
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
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		b.wg.Wait()
	})
	return b
}

// rawConnect sends a CONNECT for target to the HTTP front end at proxy and
// reads the response header. With a 200 the tunnel's bytes follow in the
// returned reader; otherwise the response body is there to read.
func rawConnect(t *testing.T, proxy, target string) (*net.TCPConn, *bufio.Reader, *http.Response) {
	t.Helper()
	c, err := net.DialTimeout("tcp", proxy, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(15 * time.Second))
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		t.Fatalf("CONNECT %s: reading the response: %v", target, err)
	}
	return c.(*net.TCPConn), br, resp
}

// httpConnect opens a tunnel to target through the HTTP front end at proxy
// and fails the test unless the answer is 200.
func httpConnect(t *testing.T, proxy, target string) (*net.TCPConn, *bufio.Reader) {
	t.Helper()
	c, br, resp := rawConnect(t, proxy, target)
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		t.Fatalf("CONNECT %s: %s\n%s", target, resp.Status, body)
	}
	return c, br
}

// socks5Connect opens a tunnel to host:port through the SOCKS5 front end at
// proxy, sending the name (no authentication). It returns the connection
// and its reader; it fails the test unless the reply is 0x00.
func socks5Connect(t *testing.T, proxy, host string, port int) (*net.TCPConn, *bufio.Reader) {
	t.Helper()
	c, err := net.DialTimeout("tcp", proxy, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(15 * time.Second))
	br := bufio.NewReader(c)
	if _, err := c.Write([]byte{5, 1, 0}); err != nil {
		t.Fatal(err)
	}
	var sel [2]byte
	if _, err := io.ReadFull(br, sel[:]); err != nil || sel != [2]byte{5, 0} {
		t.Fatalf("SOCKS5 greeting: %v %x", err, sel)
	}
	req := []byte{5, 1, 0, 3, byte(len(host))}
	req = append(req, host...)
	req = binary.BigEndian.AppendUint16(req, uint16(port))
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
	var head [4]byte
	if _, err := io.ReadFull(br, head[:]); err != nil {
		t.Fatalf("SOCKS5 reply to %s:%d: %v", host, port, err)
	}
	if head[1] != 0 {
		t.Fatalf("SOCKS5 reply to %s:%d: code 0x%02x", host, port, head[1])
	}
	var skip int
	switch head[3] {
	case 1:
		skip = 4 + 2
	case 4:
		skip = 16 + 2
	case 3:
		l, err := br.ReadByte()
		if err != nil {
			t.Fatal(err)
		}
		skip = int(l) + 2
	default:
		t.Fatalf("SOCKS5 reply: address type %d", head[3])
	}
	if _, err := io.ReadFull(br, make([]byte, skip)); err != nil {
		t.Fatal(err)
	}
	return c.(*net.TCPConn), br
}

// talkBanner reads the banner before sending anything, then sends a line,
// half-closes and expects the origin's count. It returns a description of
// the first thing that went wrong, or "".
func talkBanner(c *net.TCPConn, br *bufio.Reader, banner string, halfClose bool) string {
	got := make([]byte, len(banner))
	if _, err := io.ReadFull(br, got); err != nil || string(got) != banner {
		return fmt.Sprintf("banner: got %q, %v; want %q", got, err, banner)
	}
	if _, err := io.WriteString(c, "ping\n"); err != nil {
		return "write: " + err.Error()
	}
	if line, err := br.ReadString('\n'); err != nil || line != "ack 5\n" {
		return fmt.Sprintf("after a line: got %q, %v; want \"ack 5\\n\"", line, err)
	}
	if !halfClose {
		return ""
	}
	if err := c.CloseWrite(); err != nil {
		return "CloseWrite: " + err.Error()
	}
	if line, err := br.ReadString('\n'); err != nil || line != "got 5\n" {
		return fmt.Sprintf("after half-close: got %q, %v; want \"got 5\\n\"", line, err)
	}
	return ""
}

// atoi is strconv.Atoi for values known to be numbers.
func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}
