package test

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
)

// origin is a loopback HTTP origin that counts the requests it sees.
type origin struct {
	*httptest.Server
	hits atomic.Int64
	port string
}

func newOrigin(t *testing.T, tls bool) *origin {
	t.Helper()
	o := &origin{}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.hits.Add(1)
		if n, err := strconv.Atoi(r.URL.Query().Get("bytes")); err == nil {
			w.Header().Set("Content-Length", strconv.Itoa(n))
			buf := make([]byte, 64<<10)
			for n > 0 {
				k := min(n, len(buf))
				w.Write(buf[:k])
				n -= k
			}
			return
		}
		fmt.Fprintf(w, "hello from origin host=%s path=%s", r.Host, r.URL.Path)
	})
	if tls {
		o.Server = httptest.NewTLSServer(h)
	} else {
		o.Server = httptest.NewServer(h)
	}
	t.Cleanup(o.Close)
	_, o.port, _ = net.SplitHostPort(o.Listener.Addr().String())
	return o
}

const coreConfig = `
default: allow
hosts:
  allowed.test: 127.0.0.1
  www.allowed.test: 127.0.0.1
  exact.test: 127.0.0.1
  a.suffix.test: 127.0.0.1
  ads.glob.test: 127.0.0.1
  deep.cat.test: 127.0.0.1
  Zone.Test: 127.0.0.1
categories:
  social: [lists/social.txt]
rules:
  - block: [exact.test]
  - block: [.suffix.test]
  - block: ["ads.*.test"]
  - block: ["category:social"]
  - block: [127.0.0.2/32]
  - block: [zone.test]
    clients: [127.0.0.3/32]
  - allow: [".allowed.test"]
`

func startCore(t *testing.T) *proc {
	return startSluice(t, coreConfig, map[string]string{
		"lists/social.txt": "# social networks\ncat.test\nfacebook.com\n",
	})
}

// TestCurlPlainHTTP drives the binary with the real curl as an HTTP proxy:
// every pattern kind blocks with a 403 page, others reach the origin.
func TestCurlPlainHTTP(t *testing.T) {
	o := newOrigin(t, false)
	p := startCore(t)
	proxyURL := "http://" + p.addr
	cases := []struct {
		host    string
		iface   string
		blocked bool
		rule    string
	}{
		{"allowed.test", "", false, ""},
		{"www.allowed.test", "", false, ""},
		{"exact.test", "", true, "rule 1"},
		{"a.suffix.test", "", true, "rule 2"},
		{"ads.glob.test", "", true, "rule 3"},
		{"deep.cat.test", "", true, "rule 4"},
		{"Zone.Test", "", false, ""},               // the client condition does not apply to 127.0.0.1
		{"Zone.Test", "127.0.0.3", true, "rule 6"}, // ... but to 127.0.0.3
		{"127.0.0.1", "", false, ""},
	}
	for _, c := range cases {
		t.Run(c.host+c.iface, func(t *testing.T) {
			before := o.hits.Load()
			args := []string{"-i", "-x", proxyURL, "http://" + c.host + ":" + o.port + "/x"}
			if c.iface != "" {
				args = append([]string{"--interface", c.iface}, args...)
			}
			out, code := curl(t, args...)
			if code != 0 {
				t.Fatalf("curl exit %d: %s", code, out)
			}
			if c.blocked {
				if !strings.HasPrefix(out, "HTTP/1.1 403") {
					t.Fatalf("want 403, got:\n%s", out)
				}
				if !strings.Contains(out, "X-Sluice-Block: "+c.rule) {
					t.Errorf("X-Sluice-Block does not name %q:\n%s", c.rule, out)
				}
				if !strings.Contains(out, strings.ToLower(c.host)) {
					t.Errorf("block page does not name the host:\n%s", out)
				}
				if o.hits.Load() != before {
					t.Errorf("a blocked request reached the origin")
				}
				return
			}
			if !strings.HasPrefix(out, "HTTP/1.1 200") || !strings.Contains(out, "hello from origin") {
				t.Fatalf("want 200 from origin, got:\n%s", out)
			}
		})
	}
	// An IP literal in a blocked CIDR (no listener needed: it must not be dialed).
	out, _ := curl(t, "-i", "-x", proxyURL, "http://127.0.0.2:"+o.port+"/")
	if !strings.HasPrefix(out, "HTTP/1.1 403") || !strings.Contains(out, "X-Sluice-Block: rule 5") {
		t.Fatalf("CIDR rule: want 403 by rule 5, got:\n%s", out)
	}
	p.waitLog(t, `"msg":"access".*"verdict":"block"`)
}

// TestCurlConnect tunnels HTTPS through CONNECT with curl -p.
func TestCurlConnect(t *testing.T) {
	o := newOrigin(t, true)
	p := startCore(t)
	out, code := curl(t, "-k", "-p", "-x", "http://"+p.addr, "https://allowed.test:"+o.port+"/tls")
	if code != 0 || !strings.Contains(out, "hello from origin host=allowed.test") {
		t.Fatalf("CONNECT through sluice: exit %d:\n%s", code, out)
	}
	// A blocked CONNECT gets a 403 and never reaches the origin.
	before := o.hits.Load()
	out, code = curl(t, "-k", "-p", "-v", "-x", "http://"+p.addr, "https://exact.test:"+o.port+"/")
	if code == 0 || !strings.Contains(out, "403") {
		t.Fatalf("blocked CONNECT: want curl failure with 403, exit %d:\n%s", code, out)
	}
	if !strings.Contains(out, "X-Sluice-Block: rule 1") {
		t.Errorf("blocked CONNECT lacks X-Sluice-Block:\n%s", out)
	}
	if o.hits.Load() != before {
		t.Fatal("a blocked CONNECT reached the origin")
	}
}

// TestBlockedConnectNeverDials counts TCP accepts on the origin listener: a
// blocked CONNECT must not even open a connection to it.
func TestBlockedConnectNeverDials(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var accepts atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepts.Add(1)
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	p := startCore(t)
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	c, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "CONNECT exact.test:%s HTTP/1.1\r\nHost: exact.test:%s\r\n\r\n", port, port)
	resp, err := http.ReadResponse(newBufReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("status %d, want 403", resp.StatusCode)
	}
	// Same for an allowed target to prove the counter works.
	c2, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	fmt.Fprintf(c2, "CONNECT allowed.test:%s HTTP/1.1\r\nHost: allowed.test:%s\r\n\r\n", port, port)
	resp2, err := http.ReadResponse(newBufReader(c2), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp2.StatusCode != http.StatusOK {
		t.Fatalf("allowed CONNECT: status %d", resp2.StatusCode)
	}
	io.Copy(io.Discard, c2) // the origin closes at once
	if got := accepts.Load(); got != 1 {
		t.Fatalf("origin saw %d connections, want exactly 1 (the allowed one)", got)
	}
}

// TestGoClient uses Go's net/http client with Proxy set, plain and TLS.
func TestGoClient(t *testing.T) {
	plain := newOrigin(t, false)
	tlsO := newOrigin(t, true)
	p := startCore(t)
	pu, _ := url.Parse("http://" + p.addr)
	tr := &http.Transport{Proxy: http.ProxyURL(pu), TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	defer tr.CloseIdleConnections()
	cl := &http.Client{Transport: tr}
	for _, u := range []string{
		"http://allowed.test:" + plain.port + "/a",
		"https://allowed.test:" + tlsO.port + "/b",
	} {
		resp, err := cl.Get(u)
		if err != nil {
			t.Fatalf("%s: %v", u, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), "hello from origin") {
			t.Fatalf("%s: %d %s", u, resp.StatusCode, body)
		}
	}
	resp, err := cl.Get("http://a.suffix.test:" + plain.port + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 403 || resp.Header.Get("X-Sluice-Block") == "" || !strings.Contains(string(body), "a.suffix.test") {
		t.Fatalf("blocked: %d %v %s", resp.StatusCode, resp.Header, body)
	}
	if _, err := cl.Get("https://a.suffix.test:" + tlsO.port + "/"); err == nil {
		t.Fatal("blocked CONNECT: want an error from the client")
	}
}

// TestLargeDownloadKeepsHeapSmall streams 512 MiB through the proxy and
// checks the proxy's peak resident memory stays far below that.
func TestLargeDownloadKeepsHeapSmall(t *testing.T) {
	o := newOrigin(t, false)
	p := startCore(t)
	const size = 512 << 20
	out, code := curl(t, "-o", "/dev/null", "-w", "%{http_code} %{size_download}", "-x", "http://"+p.addr,
		"http://allowed.test:"+o.port+"/big?bytes="+strconv.Itoa(size))
	if code != 0 || out != "200 "+strconv.Itoa(size) {
		t.Fatalf("download: exit %d: %s", code, out)
	}
	hwm := vmHWM(t, p.cmd.Process.Pid)
	t.Logf("proxy peak RSS after a %d MiB download: %d MiB", size>>20, hwm>>20)
	if hwm > 96<<20 {
		t.Fatalf("proxy peak RSS %d MiB: the body was buffered", hwm>>20)
	}
}

// vmHWM reads a process's peak resident set size from /proc.
func vmHWM(t *testing.T, pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmHWM")
	return 0
}
