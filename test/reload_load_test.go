package test

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// patternBody is the content the pattern origin serves for n bytes: every
// byte depends on its offset, so a lost, repeated or reordered chunk shows.
func patternBody(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*31 + i/251)
	}
	return b
}

// newPatternOrigin serves /?n=N (N pattern bytes at once) and
// /slow?n=N (the same, 16 chunks 40 ms apart, so that the response is
// in flight across a reload). It answers every host name.
func newPatternOrigin(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.Atoi(r.URL.Query().Get("n"))
		if err != nil || n <= 0 || n > 8<<20 {
			n = 1024
		}
		body := patternBody(n)
		w.Header().Set("Content-Length", strconv.Itoa(n))
		if r.URL.Path != "/slow" {
			w.Write(body)
			return
		}
		rc := http.NewResponseController(w)
		step := (n + 15) / 16
		for off := 0; off < n; off += step {
			w.Write(body[off:min(off+step, n)])
			rc.Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(40 * time.Millisecond):
			}
		}
	}))
	t.Cleanup(srv.Close)
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	return port
}

// genConfig is the config of generation g: a.test is blocked when g is
// even and allowed when it is odd; the rule count is g+1 in every
// generation, so that the reload's log line tells which one is in force.
func genConfig(g int) string {
	var b strings.Builder
	b.WriteString("hosts: {a.test: 127.0.0.1, b.test: 127.0.0.1}\nrules:\n")
	fillers := g + 1
	if g%2 == 0 {
		b.WriteString("  - block: [a.test]\n")
		fillers--
	}
	for i := range fillers {
		fmt.Fprintf(&b, "  - block: [filler%d.test]\n", i)
	}
	return b.String()
}

// genCode is the HTTP status a new request to a.test gets in generation g.
func genCode(g int64) int {
	if g%2 == 0 {
		return http.StatusForbidden
	}
	return http.StatusOK
}

// reloadGen tracks which generation may be in force: written is the
// newest config on disk, logged the newest whose reload Sluice logged.
// While they are equal no swap is in progress, and a new request must get
// exactly that generation's verdict.
type reloadGen struct{ written, logged atomic.Int64 }

// before is read as a request starts; exact, given its values once the
// request has ended, returns the generation the request must have met, or
// -1 when a swap may have happened while it ran.
func (r *reloadGen) before() (int64, int64) { return r.logged.Load(), r.written.Load() }

func (r *reloadGen) exact(logged0, written0 int64) int64 {
	logged1, written1 := r.logged.Load(), r.written.Load()
	if logged0 == written0 && logged1 == written1 && logged0 == logged1 {
		return logged0
	}
	return -1
}

// connectStatus sends CONNECT target on c and returns the status code.
func connectStatus(c net.Conn, br *bufio.Reader, target string) (int, error) {
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != 200 {
		io.Copy(io.Discard, resp.Body)
	}
	return resp.StatusCode, nil
}

// socks5Status asks for a SOCKS5 tunnel to host:port (by name, no
// authentication) and returns the reply code.
func socks5Status(c net.Conn, br *bufio.Reader, host string, port int) (byte, error) {
	c.Write([]byte{5, 1, 0})
	var sel [2]byte
	if _, err := io.ReadFull(br, sel[:]); err != nil || sel != [2]byte{5, 0} {
		return 0xff, fmt.Errorf("greeting: %v %x", err, sel)
	}
	req := append([]byte{5, 1, 0, 3, byte(len(host))}, host...)
	c.Write(binary.BigEndian.AppendUint16(req, uint16(port)))
	var head [4]byte
	if _, err := io.ReadFull(br, head[:]); err != nil {
		return 0xff, err
	}
	if head[1] == 0 && head[3] == 1 {
		if _, err := io.ReadFull(br, make([]byte, 6)); err != nil {
			return 0xff, err
		}
	}
	return head[1], nil
}

// heldTunnel is a tunnel opened once and used after every reload.
type heldTunnel struct {
	name string
	c    net.Conn
	br   *bufio.Reader
	n    int // round trips so far
}

// roundTrip sends a distinctive message through the tunnel to the echo
// origin and checks that exactly it comes back.
func (h *heldTunnel) roundTrip() error {
	h.n++
	msg := bytes.Repeat(fmt.Appendf(nil, "%s round %d;", h.name, h.n), 200)
	h.c.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := h.c.Write(msg); err != nil {
		return err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(h.br, got); err != nil {
		return err
	}
	if !bytes.Equal(got, msg) {
		return fmt.Errorf("round %d: bytes differ", h.n)
	}
	return nil
}

func openHeld(t *testing.T, proxy, name, host string, port int) *heldTunnel {
	t.Helper()
	c, err := net.DialTimeout("tcp", proxy, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(15 * time.Second))
	br := bufio.NewReader(c)
	target := net.JoinHostPort(host, strconv.Itoa(port))
	if strings.HasPrefix(name, "socks5") {
		if code, err := socks5Status(c, br, host, port); err != nil || code != 0 {
			t.Fatalf("%s: SOCKS5 reply 0x%02x, %v", name, code, err)
		}
	} else if code, err := connectStatus(c, br, target); err != nil || code != 200 {
		t.Fatalf("%s: CONNECT %d, %v", name, code, err)
	}
	return &heldTunnel{name: name, c: c, br: br}
}

// TestReloadUnderLoadLosesNothing swaps the rules ten times while
// connections are in flight: host a.test is blocked in even generations
// and allowed in odd ones, each written by rename and announced with
// SIGHUP or `sluice reload --pid`. Throughout:
//   - CONNECT and SOCKS5 tunnels opened before the swaps (to b.test, and to
//     a.test while it was allowed) carry every byte intact after each swap;
//   - downloads that are in flight during a swap arrive complete and exact;
//   - once a generation's reload is logged, every new request to a.test
//     (plain HTTP by curl, on a kept-alive connection, CONNECT, SOCKS5) gets
//     that generation's verdict;
//   - background clients to a.test whose request did not overlap a swap
//     get the verdict of the generation in force, and those to b.test are
//     all served, with exact bodies.
func TestReloadUnderLoadLosesNothing(t *testing.T) {
	const gens = 10
	webPort := newPatternOrigin(t)
	echo := newTCPEcho(t)
	_, echoPortS, _ := net.SplitHostPort(echo.addr)
	echoPort := atoi(echoPortS)
	p := startSluice(t, genConfig(0), nil)
	cfg := filepath.Join(p.dir, "sluice.yaml")
	var gen reloadGen
	web := func(host, path string) string { return "http://" + host + ":" + webPort + path }

	held := []*heldTunnel{
		openHeld(t, p.addr, "connect b", "b.test", echoPort),
		openHeld(t, p.addr, "socks5 b", "b.test", echoPort),
	}
	keep, err := net.Dial("tcp", p.addr) // one kept-alive HTTP connection for every generation
	if err != nil {
		t.Fatal(err)
	}
	defer keep.Close()
	keepBR := bufio.NewReader(keep)

	// Background load, bounded in count and stopped after the last swap.
	stop := make(chan struct{})
	var (
		wg                         sync.WaitGroup
		bOK, aExact, aSwap, aWrong atomic.Int64
		failMu                     sync.Mutex
		failures                   []string
	)
	fail := func(format string, args ...any) {
		failMu.Lock()
		defer failMu.Unlock()
		if len(failures) < 20 {
			failures = append(failures, fmt.Sprintf(format, args...))
		}
	}
	proxyURL, _ := url.Parse("http://" + p.addr)
	client := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL), MaxIdleConnsPerHost: 4}, Timeout: 20 * time.Second}
	defer client.CloseIdleConnections()
	for w := range 2 {
		wg.Go(func() { // b.test: always allowed, bodies exact
			for i := 0; i < 3000; i++ {
				select {
				case <-stop:
					return
				default:
				}
				n := 1 + (i*7919+w*104729)%65536
				resp, err := client.Get(web("b.test", "/?n="+strconv.Itoa(n)))
				if err != nil {
					fail("b.test request %d: %v", i, err)
					continue
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != 200 || !bytes.Equal(body, patternBody(n)) {
					fail("b.test request %d: status %d, %d of %d bytes, %v", i, resp.StatusCode, len(body), n, err)
					continue
				}
				bOK.Add(1)
			}
		})
	}
	wg.Go(func() { // a.test: the verdict follows the generation
		for i := 0; i < 3000; i++ {
			select {
			case <-stop:
				return
			default:
			}
			l0, w0 := gen.before()
			resp, err := client.Get(web("a.test", "/?n=100"))
			if err != nil {
				fail("a.test request %d: %v", i, err)
				continue
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			g := gen.exact(l0, w0)
			switch {
			case g < 0:
				aSwap.Add(1)
			case resp.StatusCode == genCode(g):
				aExact.Add(1)
			default:
				aWrong.Add(1)
				fail("a.test request %d in generation %d: status %d, want %d", i, g, resp.StatusCode, genCode(g))
			}
		}
	})

	type download struct {
		what string
		n    int
		done chan error
	}
	// startDownload returns once the response's header and first bytes
	// have arrived, so that the rest is in flight during the swap.
	startDownload := func(host string, n int) *download {
		d := &download{what: host, n: n, done: make(chan error, 1)}
		resp, err := client.Get(web(host, "/slow?n="+strconv.Itoa(n)))
		if err != nil {
			d.done <- err
			return d
		}
		if resp.StatusCode != 200 {
			resp.Body.Close()
			d.done <- fmt.Errorf("status %d before the swap", resp.StatusCode)
			return d
		}
		first := make([]byte, 1)
		if _, err := io.ReadFull(resp.Body, first); err != nil {
			resp.Body.Close()
			d.done <- err
			return d
		}
		go func() {
			defer resp.Body.Close()
			rest, err := io.ReadAll(resp.Body)
			if body := append(first, rest...); err == nil && !bytes.Equal(body, patternBody(n)) {
				err = fmt.Errorf("%d of %d bytes, content differs", len(body), n)
			}
			d.done <- err
		}()
		return d
	}

	for g := 1; g <= gens; g++ {
		// A download in flight across the swap: of b.test always, and of
		// a.test when a.test is allowed now and blocked in the next one.
		inflight := []*download{startDownload("b.test", 256<<10)}
		if (g-1)%2 == 1 {
			inflight = append(inflight, startDownload("a.test", 256<<10))
		}

		gen.written.Store(int64(g))
		tmp := cfg + ".tmp"
		if err := os.WriteFile(tmp, []byte(genConfig(g)), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, cfg); err != nil {
			t.Fatal(err)
		}
		if g%2 == 0 {
			p.cmd.Process.Signal(syscall.SIGHUP)
		} else if out, code := runCLI(t, p.dir, "reload", "--pid", strconv.Itoa(p.cmd.Process.Pid)); code != 0 {
			t.Fatalf("sluice reload: exit %d: %s", code, out)
		}
		p.waitLog(t, fmt.Sprintf(`"msg":"rules reloaded","rules":%d,`, g+1))
		gen.logged.Store(int64(g))

		for _, d := range inflight {
			if err := <-d.done; err != nil {
				t.Errorf("generation %d: a download of %s in flight during the swap: %v", g, d.what, err)
			}
		}
		for _, h := range held {
			if err := h.roundTrip(); err != nil {
				t.Fatalf("generation %d: held tunnel %q: %v", g, h.name, err)
			}
		}
		checkNewRequests(t, p, g, web, keep, keepBR, echoPort)
		if g == 1 {
			// Tunnels to a.test opened while it is allowed, held through the
			// generations that block it.
			held = append(held, openHeld(t, p.addr, "connect a", "a.test", echoPort), openHeld(t, p.addr, "socks5 a", "a.test", echoPort))
		}
	}
	close(stop)
	wg.Wait()
	for _, f := range failures {
		t.Error(f)
	}
	if bOK.Load() == 0 || aExact.Load() == 0 {
		t.Errorf("background load did not run: %d b.test bodies, %d a.test verdicts", bOK.Load(), aExact.Load())
	}
	t.Logf("%d reloads; background: %d exact b.test bodies, a.test verdicts %d checked (%d wrong), %d overlapped a swap",
		gens, bOK.Load(), aExact.Load()+aWrong.Load(), aWrong.Load(), aSwap.Load())
}

// checkNewRequests makes new requests to a.test in every form right after
// generation g's reload was logged, and checks g's verdict.
func checkNewRequests(t *testing.T, p *proc, g int, web func(host, path string) string, keep net.Conn, keepBR *bufio.Reader, echoPort int) {
	t.Helper()
	want := genCode(int64(g))
	if s := statusOf(t, p, web("a.test", "/?n=10")); s != strconv.Itoa(want) {
		t.Errorf("generation %d: curl a.test: %s, want %d", g, s, want)
	}
	// The kept-alive connection: a request to each host, the same socket.
	for _, host := range []string{"a.test", "b.test"} {
		keep.SetDeadline(time.Now().Add(15 * time.Second))
		u := web(host, "/?n=3000")
		fmt.Fprintf(keep, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", u, strings.SplitN(u, "/", 4)[2])
		resp, err := http.ReadResponse(keepBR, nil)
		if err != nil {
			t.Fatalf("generation %d: kept-alive connection, %s: %v", g, host, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		code := 200
		if host == "a.test" {
			code = want
		}
		if err != nil || resp.StatusCode != code || code == 200 && !bytes.Equal(body, patternBody(3000)) {
			t.Errorf("generation %d: kept-alive %s: status %d (want %d), %d bytes, %v", g, host, resp.StatusCode, code, len(body), err)
		}
	}
	c, err := net.DialTimeout("tcp", p.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(15 * time.Second))
	if code, err := connectStatus(c, bufio.NewReader(c), net.JoinHostPort("a.test", strconv.Itoa(echoPort))); err != nil || code != want {
		t.Errorf("generation %d: CONNECT a.test: %d, %v; want %d", g, code, err, want)
	}
	c.Close()
	c, err = net.DialTimeout("tcp", p.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(15 * time.Second))
	wantRep := byte(0)
	if want != 200 {
		wantRep = 2 // connection not allowed by ruleset
	}
	if rep, err := socks5Status(c, bufio.NewReader(c), "a.test", echoPort); err != nil || rep != wantRep {
		t.Errorf("generation %d: SOCKS5 a.test: reply 0x%02x, %v; want 0x%02x", g, rep, err, wantRep)
	}
	c.Close()
}
