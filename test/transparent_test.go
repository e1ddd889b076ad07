package test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// gateway is a client namespace joined by a veth pair to a gateway
// namespace, whose nftables redirect the client's TCP 80 and 443 to
// Sluice's transparent listener. Every address lives inside them: the
// documentation ranges never reach the host's own network.
type gateway struct {
	client, gw string // namespace names
}

// Addresses inside the namespaces.
const (
	gwAddr4     = "192.0.2.1"
	clientAddr4 = "192.0.2.2"
	gwAddr6     = "2001:db8:1::1"
	clientAddr6 = "2001:db8:1::2"
	// Origins, on the gateway's loopback interface: allowed sites on .10,
	// blocked ones on .20.
	okOrigin4  = "198.51.100.10"
	badOrigin4 = "198.51.100.20"
	okOrigin6  = "2001:db8:2::10"
	badOrigin6 = "2001:db8:2::20"
	transPort  = "3129"
	adminAddr  = "127.0.0.1:9180" // the gateway namespace's own loopback
)

// newGateway creates the namespaces, or fails the test with the reason.
func newGateway(t *testing.T) *gateway {
	t.Helper()
	ip := requireTool(t, "ip")
	nft := requireTool(t, "nft")
	id := fmt.Sprintf("%d", os.Getpid()%100000)
	g := &gateway{client: "slc" + id, gw: "slg" + id}
	vc, vg := "vc"+id, "vg"+id
	run := func(prog string, args ...string) {
		t.Helper()
		if out, err := exec.Command(prog, args...).CombinedOutput(); err != nil {
			t.Fatalf("transparent test needs network namespaces (root, CAP_NET_ADMIN): %s %s: %v\n%s", filepath.Base(prog), strings.Join(args, " "), err, out)
		}
	}
	exec.Command(ip, "netns", "del", g.client).Run() // left over from a killed run
	exec.Command(ip, "netns", "del", g.gw).Run()
	run(ip, "netns", "add", g.client)
	t.Cleanup(func() { exec.Command(ip, "netns", "del", g.client).Run() })
	run(ip, "netns", "add", g.gw)
	t.Cleanup(func() { exec.Command(ip, "netns", "del", g.gw).Run() })
	run(ip, "link", "add", vc, "netns", g.client, "type", "veth", "peer", "name", vg, "netns", g.gw)
	for _, args := range [][]string{
		{"-n", g.client, "link", "set", "lo", "up"},
		{"-n", g.client, "addr", "add", clientAddr4 + "/24", "dev", vc},
		{"-n", g.client, "addr", "add", clientAddr6 + "/64", "dev", vc, "nodad"},
		{"-n", g.client, "link", "set", vc, "up"},
		{"-n", g.client, "route", "add", "default", "via", gwAddr4},
		{"-n", g.client, "-6", "route", "add", "default", "via", gwAddr6},
		{"-n", g.gw, "link", "set", "lo", "up"},
		{"-n", g.gw, "addr", "add", gwAddr4 + "/24", "dev", vg},
		{"-n", g.gw, "addr", "add", gwAddr6 + "/64", "dev", vg, "nodad"},
		{"-n", g.gw, "link", "set", vg, "up"},
		{"-n", g.gw, "addr", "add", okOrigin4 + "/32", "dev", "lo"},
		{"-n", g.gw, "addr", "add", badOrigin4 + "/32", "dev", "lo"},
		{"-n", g.gw, "addr", "add", okOrigin6 + "/128", "dev", "lo", "nodad"},
		{"-n", g.gw, "addr", "add", badOrigin6 + "/128", "dev", "lo", "nodad"},
	} {
		run(ip, args...)
	}
	// The README's rules, with this test's interface.
	nftRules := strings.ReplaceAll(readmeCode(t, "### Redirecting with nftables"), `"lan0"`, `"`+vg+`"`)
	if !strings.Contains(nftRules, "redirect to :"+transPort) || !strings.Contains(nftRules, `"`+vg+`"`) {
		t.Fatalf("the README's nftables rules changed; adapt the test:\n%s", nftRules)
	}
	rules := filepath.Join(t.TempDir(), "gateway.nft")
	writeFiles(t, filepath.Dir(rules), map[string]string{"gateway.nft": nftRules})
	run(ip, "netns", "exec", g.gw, nft, "-f", rules)
	return g
}

// inGateway runs fn on a thread inside the gateway namespace: sockets it
// opens live there. The thread is never given back to the scheduler.
func (g *gateway) inGateway(t *testing.T, fn func() error) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with this goroutine
		f, err := os.Open("/run/netns/" + g.gw)
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", g.gw, err)
			return
		}
		errc <- fn()
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// startOrigins serves HTTP on port 80 and HTTPS on 443 of each address in
// the gateway namespace, answering "origin ADDR"; it returns the accept
// count of each address.
func (g *gateway) startOrigins(t *testing.T, addrs ...string) map[string]*atomic.Int64 {
	t.Helper()
	cert := selfSigned(t)
	counts := map[string]*atomic.Int64{}
	for _, a := range addrs {
		n := new(atomic.Int64)
		counts[a] = n
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "origin "+a+"\n") })
		for _, port := range []string{"80", "443"} {
			var ln net.Listener
			g.inGateway(t, func() (err error) {
				ln, err = net.Listen("tcp", net.JoinHostPort(a, port))
				return err
			})
			srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
			cl := countingListener{ln, n}
			if port == "443" {
				go srv.Serve(tls.NewListener(cl, &tls.Config{Certificates: []tls.Certificate{cert}}))
			} else {
				go srv.Serve(cl)
			}
			t.Cleanup(func() { srv.Close() })
		}
	}
	return counts
}

func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "origin.test"},
		DNSNames:  []string{"allowed.test", "blocked.test", "social.test", "pupils.test", "staff.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// curlClient runs curl in the client namespace, without any proxy
// setting, and returns its output (body, then the status on the last
// line) and exit code.
func (g *gateway) curlClient(t *testing.T, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", g.client, requireTool(t, "curl"),
		"-sS", "-k", "--noproxy", "*", "--max-time", "15", "-w", "\n%{http_code}"}, args...)...)
	cmd.Env = append(os.Environ(), "HTTP_PROXY=", "HTTPS_PROXY=", "http_proxy=", "https_proxy=", "ALL_PROXY=", "all_proxy=")
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), code
}

const transparentConfig = `listen: ["127.0.0.1:0"]
admin: "` + adminAddr + `"
transparent:
  listen: ["` + gwAddr4 + `:` + transPort + `", "[` + gwAddr6 + `]:` + transPort + `"]
clients: ["192.0.2.0/24", "2001:db8:1::/64", "127.0.0.0/8"]
default: allow
hosts:
  allowed.test: [` + okOrigin4 + `, "` + okOrigin6 + `"]
  staff.test: [` + okOrigin4 + `, "` + okOrigin6 + `"]
  blocked.test: [` + badOrigin4 + `, "` + badOrigin6 + `"]
  social.test: [` + badOrigin4 + `, "` + badOrigin6 + `"]
  pupils.test: [` + badOrigin4 + `, "` + badOrigin6 + `"]
categories:
  social: [social.txt]
rules:
  - block: [blocked.test]
  - block: ["category:social"]
  - block: [pupils.test]
    clients: ["192.0.2.0/24", "2001:db8:1::/64"]
  - block: [staff.test]
    clients: ["198.51.100.0/24"]
`

// TestTransparentGateway runs Sluice as a gateway's transparent proxy in
// network namespaces: curl in the client namespace knows of no proxy;
// nftables redirects its TCP 80 and 443 to Sluice.
func TestTransparentGateway(t *testing.T) {
	g := newGateway(t)
	counts := g.startOrigins(t, okOrigin4, badOrigin4, okOrigin6, badOrigin6)
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"sluice.yaml": transparentConfig, "social.txt": "social.test\n"})
	p := runProgram(t, dir, "ip", "netns", "exec", g.gw, sluiceBin, "serve", "--config", filepath.Join(dir, "sluice.yaml"))
	p.waitLog(t, `transparent: listening on \[`+regexp.QuoteMeta(gwAddr6))

	for _, fam := range []struct {
		name    string
		ok, bad string
	}{{"ipv4", okOrigin4, badOrigin4}, {"ipv6", okOrigin6, badOrigin6}} {
		t.Run(fam.name, func(t *testing.T) {
			okHost, badHost := fam.ok, fam.bad
			if strings.Contains(okHost, ":") {
				okHost, badHost = "["+okHost+"]", "["+badHost+"]"
			}
			resolve := func(name, port, addr string) string { return name + ":" + port + ":" + addr }
			allowedAccepts := counts[fam.ok].Load()
			mustBad := func(what string) {
				t.Helper()
				if n := counts[fam.bad].Load(); n != 0 {
					t.Fatalf("%s: the blocked origin %s accepted %d connections", what, fam.bad, n)
				}
			}

			// Allowed HTTP and HTTPS load, from the original destination.
			for _, scheme := range []string{"http", "https"} {
				port := map[string]string{"http": "80", "https": "443"}[scheme]
				out, code := g.curlClient(t, "--resolve", resolve("allowed.test", port, okHost), scheme+"://allowed.test/")
				if code != 0 || !strings.HasPrefix(out, "origin "+fam.ok+"\n") || !strings.HasSuffix(out, "\n200") {
					t.Errorf("allowed %s: curl exit %d\n%s\n%s", scheme, code, out, p.Log())
				}
			}
			if n := counts[fam.ok].Load() - allowedAccepts; n != 2 {
				t.Errorf("allowed origin accepted %d connections for 2 requests", n)
			}

			// A blocked HTTP site gets the block page; its origin sees nothing.
			for _, name := range []string{"blocked.test", "social.test", "pupils.test"} {
				out, code := g.curlClient(t, "--resolve", resolve(name, "80", badHost), "http://"+name+"/")
				if code != 0 || !strings.HasSuffix(out, "\n403") || !strings.Contains(out, "This site is blocked") || !strings.Contains(out, name) {
					t.Errorf("blocked http %s: curl exit %d\n%s", name, code, out)
				}
				mustBad("blocked http " + name)
			}
			// A blocked HTTPS site is closed after the ClientHello.
			for _, name := range []string{"blocked.test", "social.test", "pupils.test"} {
				out, code := g.curlClient(t, "--resolve", resolve(name, "443", badHost), "https://"+name+"/")
				if code == 0 || strings.Contains(out, "origin ") {
					t.Errorf("blocked https %s: curl exit %d\n%s", name, code, out)
				}
				mustBad("blocked https " + name)
			}
			// verify_host: an allowed name sent to the blocked server's address.
			out, code := g.curlClient(t, "--resolve", resolve("allowed.test", "80", badHost), "http://allowed.test/")
			if code != 0 || !strings.HasSuffix(out, "\n403") {
				t.Errorf("host mismatch http: curl exit %d\n%s", code, out)
			}
			out, code = g.curlClient(t, "--resolve", resolve("allowed.test", "443", badHost), "https://allowed.test/")
			if code == 0 || strings.Contains(out, "origin ") {
				t.Errorf("host mismatch https: curl exit %d\n%s", code, out)
			}
			mustBad("host mismatch")

			// The clients: rule for another subnet does not apply.
			out, code = g.curlClient(t, "--resolve", resolve("staff.test", "443", okHost), "https://staff.test/")
			if code != 0 || !strings.HasPrefix(out, "origin "+fam.ok+"\n") {
				t.Errorf("staff.test (a rule for another subnet): curl exit %d\n%s", code, out)
			}
		})
	}

	// The access log says what happened, with proto transparent.
	log := p.Log()
	for _, want := range []string{
		`"proto":"transparent"`, `"reason":"host mismatch"`, `"category":"social"`,
		`"sniffed":"pupils.test"`, `"target":"[` + badOrigin6 + `]:443"`,
	} {
		if !strings.Contains(log, want) {
			t.Errorf("access log lacks %s:\n%s", want, log)
		}
	}
	// Metrics count the front end.
	cmd := exec.Command("ip", "netns", "exec", g.gw, requireTool(t, "curl"), "-sS", "--max-time", "10", "http://"+adminAddr+"/metrics")
	m, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("metrics: %v\n%s", err, m)
	}
	for _, re := range []string{
		`sluice_connections_total\{frontend="transparent"\} [1-9]`,
		`sluice_requests_total\{category="social",frontend="transparent",verdict="block"\} [1-9]`,
	} {
		if !regexp.MustCompile(re).Match(m) {
			t.Errorf("metrics lack %s:\n%s", re, grepLines(string(m), "transparent"))
		}
	}
}

// TestTransparentLoopRefused connects, inside the gateway, to the
// transparent listener itself (no redirect): refused as a loop, never
// dialed back into Sluice.
func TestTransparentLoopRefused(t *testing.T) {
	g := newGateway(t)
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"sluice.yaml": transparentConfig, "social.txt": "social.test\n"})
	p := runProgram(t, dir, "ip", "netns", "exec", g.gw, sluiceBin, "serve", "--config", filepath.Join(dir, "sluice.yaml"))
	p.waitLog(t, `transparent: listening on \[`+regexp.QuoteMeta(gwAddr6))
	out, code := g.curlClient(t, "--resolve", "allowed.test:"+transPort+":"+gwAddr4, "http://allowed.test:"+transPort+"/")
	if code != 0 || !strings.HasSuffix(out, "\n403") {
		t.Errorf("loop: curl exit %d\n%s", code, out)
	}
	p.waitLog(t, `"reason":"loop"`)
	if strings.Count(p.Log(), `"proto":"transparent"`) != 1 {
		t.Errorf("one connection, not one access line:\n%s", p.Log())
	}
}

// readmeCode returns the first plain code block (```) after heading in
// the README.
func readmeCode(t *testing.T, heading string) string {
	t.Helper()
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	i := strings.Index(s, "\n"+heading+"\n")
	if i < 0 {
		t.Fatalf("README has no %q", heading)
	}
	s = s[i:]
	i = strings.Index(s, "\n```\n")
	if i < 0 {
		t.Fatalf("no code block after %q", heading)
	}
	s = s[i+len("\n```\n"):]
	return s[:strings.Index(s, "\n```")+1]
}

// TestREADMEGatewayValidates: the README's transparent gateway example
// validates as written.
func TestREADMEGatewayValidates(t *testing.T) {
	example := readmeBlock(t, "## Transparent gateway")
	dir, path := writeConfig(t, example, map[string]string{"lists/social.txt": "social.example\n"})
	if out, code := runCLI(t, dir, "config", "validate", "--config", path); code != 0 {
		t.Errorf("gateway example: exit %d:\n%s", code, out)
	}
	// Without clients: a transparent listener beyond loopback is an open proxy.
	open := strings.Replace(example, "clients:", "# clients:", 1)
	dir, path = writeConfig(t, open, map[string]string{"lists/social.txt": "social.example\n"})
	if out, code := runCLI(t, dir, "config", "validate", "--config", path); code == 0 || !strings.Contains(out, "refusing to listen on 192.0.2.1:3129") {
		t.Errorf("gateway example without clients: exit %d:\n%s", code, out)
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestTransparentClientsRefused: the transparent listener obeys
// `clients:` like any listener: a device outside it is closed and its
// origin never connected to.
func TestTransparentClientsRefused(t *testing.T) {
	g := newGateway(t)
	counts := g.startOrigins(t, okOrigin4, okOrigin6)
	dir := t.TempDir()
	config := strings.Replace(transparentConfig, `clients: ["192.0.2.0/24", "2001:db8:1::/64", "127.0.0.0/8"]`,
		`clients: ["192.0.2.100/32", "2001:db8:1::100/128", "127.0.0.0/8"]`, 1)
	writeFiles(t, dir, map[string]string{"sluice.yaml": config, "social.txt": "social.test\n"})
	p := runProgram(t, dir, "ip", "netns", "exec", g.gw, sluiceBin, "serve", "--config", filepath.Join(dir, "sluice.yaml"))
	p.waitLog(t, `transparent: listening on \[`+regexp.QuoteMeta(gwAddr6))
	for _, addr := range []string{okOrigin4, "[" + okOrigin6 + "]"} {
		for _, scheme := range []string{"http", "https"} {
			port := map[string]string{"http": "80", "https": "443"}[scheme]
			out, code := g.curlClient(t, "--resolve", "allowed.test:"+port+":"+addr, scheme+"://allowed.test/")
			if code == 0 || strings.Contains(out, "origin ") {
				t.Errorf("%s to %s from outside clients: curl exit %d\n%s", scheme, addr, code, out)
			}
		}
	}
	if n := counts[okOrigin4].Load() + counts[okOrigin6].Load(); n != 0 {
		t.Errorf("origins accepted %d connections from a client outside clients:", n)
	}
	// The line may follow the close that curl saw: wait for it a little.
	c := 0
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if c = strings.Count(p.Log(), "client not in `clients`; connection closed"); c >= 4 || time.Now().After(deadline) {
			break
		}
	}
	if c != 4 {
		t.Errorf("%d refusals logged, want 4:\n%s", c, p.Log())
	}
}
