package test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// lineEcho is a loopback TCP origin that answers every line with
// "echo: LINE\n" and counts the connections it accepts. With upgrade set it
// first reads an HTTP request head and answers 101 Switching Protocols, as
// a WebSocket server does.
type lineEcho struct {
	ln      net.Listener
	port    int
	accepts atomic.Int64
	upgrade bool
	mu      sync.Mutex
	conns   []net.Conn
	wg      sync.WaitGroup
}

func newLineEcho(t *testing.T, upgrade bool) *lineEcho {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o := &lineEcho{ln: ln, port: ln.Addr().(*net.TCPAddr).Port, upgrade: upgrade}
	o.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			o.accepts.Add(1)
			o.mu.Lock()
			o.conns = append(o.conns, c)
			o.mu.Unlock()
			o.wg.Go(func() { o.serve(c) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		o.mu.Lock()
		for _, c := range o.conns {
			c.Close()
		}
		o.mu.Unlock()
		o.wg.Wait()
	})
	return o
}

func (o *lineEcho) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	if o.upgrade {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		if !strings.EqualFold(req.Header.Get("Upgrade"), "websocket") {
			io.WriteString(c, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
			return
		}
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
	}
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		if _, err := io.WriteString(c, "echo: "+line); err != nil {
			return
		}
	}
}

// echoLine sends line through a tunnel and reads the origin's answer. It
// returns a description of what went wrong, or "".
func echoLine(c net.Conn, br *bufio.Reader, line string) string {
	c.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		return "write: " + err.Error()
	}
	got, err := br.ReadString('\n')
	if err != nil {
		return "read: " + err.Error()
	}
	if got != "echo: "+line+"\n" {
		return fmt.Sprintf("got %q", got)
	}
	return ""
}

// wsUpgrade opens a WebSocket-like upgraded tunnel to the origin on port
// through the HTTP front end at proxy.
func wsUpgrade(t *testing.T, proxy string, port int) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.DialTimeout("tcp", proxy, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(15 * time.Second))
	fmt.Fprintf(c, "GET http://127.0.0.1:%d/chat HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", port, port)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodGet})
	if err != nil {
		t.Fatalf("upgrade: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %s", resp.Status)
	}
	return c, br
}

// slowOrigin serves /slow: half of the body at once, the other half once
// release is closed.
type slowOrigin struct {
	*httptest.Server
	release chan struct{}
	once    sync.Once
}

const slowHalf = 256 << 10

func newSlowOrigin(t *testing.T) *slowOrigin {
	o := &slowOrigin{release: make(chan struct{})}
	o.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(2*slowHalf))
		w.Write(make([]byte, slowHalf))
		http.NewResponseController(w).Flush()
		select {
		case <-o.release:
		case <-r.Context().Done():
			return
		}
		w.Write(make([]byte, slowHalf))
	}))
	t.Cleanup(func() { o.Release(); o.Close() })
	return o
}

func (o *slowOrigin) Release() { o.once.Do(func() { close(o.release) }) }

// waitExit waits (at most 60 s) for the process to exit and fails the test
// unless its status is 0.
func waitExit(t *testing.T, p *proc) {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(60 * time.Second):
		t.Fatalf("sluice did not exit within 60s of SIGTERM; log:\n%s", p.Log())
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("sluice exited with status %d (%v), want 0; log:\n%s", code, p.cmd.ProcessState, p.Log())
	}
}

// TestShutdownDrainsInFlight: on SIGTERM a slow plain download, a CONNECT
// tunnel, a WebSocket upgraded tunnel and a SOCKS5 tunnel all go on and
// complete; new connections are refused at once; a SIGHUP meanwhile is
// harmless; the process exits 0 only after the last of them ended.
func TestShutdownDrainsInFlight(t *testing.T) {
	echo := newLineEcho(t, false)
	ws := newLineEcho(t, true)
	slow := newSlowOrigin(t)
	p := startSluice(t, "shutdown_grace: 2m\n", nil)

	// A plain download whose second half the origin holds back.
	pu, _ := url.Parse("http://" + p.addr)
	client := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(pu), DisableKeepAlives: true}}
	resp, err := client.Get(slow.URL + "/slow")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if _, err := io.ReadFull(resp.Body, make([]byte, slowHalf)); err != nil {
		t.Fatalf("first half of the download: %v", err)
	}
	target := "127.0.0.1:" + strconv.Itoa(echo.port)
	cc, cbr := httpConnect(t, p.addr, target)
	wc, wbr := wsUpgrade(t, p.addr, ws.port)
	sc, sbr := socks5Connect(t, p.addr, "127.0.0.1", echo.port)
	for name, tun := range map[string]struct {
		c  net.Conn
		br *bufio.Reader
	}{"CONNECT": {cc, cbr}, "WebSocket": {wc, wbr}, "SOCKS5": {sc, sbr}} {
		if e := echoLine(tun.c, tun.br, "before"); e != "" {
			t.Fatalf("%s before SIGTERM: %s", name, e)
		}
	}

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	p.waitLog(t, `shutting down`)
	if c, err := net.DialTimeout("tcp", p.addr, 5*time.Second); err == nil {
		c.Close()
		t.Fatal("a new connection was accepted after the shutdown began")
	}
	// A reload requested during the shutdown (systemd's ExecReload, a
	// cron job) must neither kill the process nor cut its connections.
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}

	for name, tun := range map[string]struct {
		c  net.Conn
		br *bufio.Reader
	}{"CONNECT": {cc, cbr}, "WebSocket": {wc, wbr}, "SOCKS5": {sc, sbr}} {
		if e := echoLine(tun.c, tun.br, "after SIGTERM"); e != "" {
			t.Fatalf("%s tunnel cut by SIGTERM: %s", name, e)
		}
		tun.c.Close()
	}
	select {
	case <-p.done:
		t.Fatalf("sluice exited with a download in flight; log:\n%s", p.Log())
	default:
	}
	slow.Release()
	rest, err := io.ReadAll(resp.Body)
	if err != nil || len(rest) != slowHalf {
		t.Fatalf("second half of the download after SIGTERM: %d bytes, %v (want %d bytes)", len(rest), err, slowHalf)
	}
	waitExit(t, p)
	if strings.Contains(p.Log(), "grace period over") {
		t.Fatalf("connections were closed by the grace period although all ended; log:\n%s", p.Log())
	}
}

// TestShutdownGraceClosesTheRest: a tunnel still open when shutdown_grace
// ends is closed, and the process exits 0.
func TestShutdownGraceClosesTheRest(t *testing.T) {
	echo := newLineEcho(t, false)
	p := startSluice(t, "shutdown_grace: 5s\n", nil)
	c, br := httpConnect(t, p.addr, "127.0.0.1:"+strconv.Itoa(echo.port))
	sc, sbr := socks5Connect(t, p.addr, "127.0.0.1", echo.port)
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	p.waitLog(t, `shutting down`)
	if e := echoLine(c, br, "within the grace period"); e != "" {
		t.Fatalf("CONNECT tunnel within the grace period: %s", e)
	}
	// Neither client closes: the grace period must.
	for name, r := range map[string]*bufio.Reader{"CONNECT": br, "SOCKS5": sbr} {
		conn := c
		if name == "SOCKS5" {
			conn = sc
		}
		conn.SetReadDeadline(time.Now().Add(60 * time.Second))
		if _, err := r.ReadByte(); err == nil || isTimeout(err) {
			t.Fatalf("%s tunnel after the grace period: %v, want closed by sluice", name, err)
		}
	}
	waitExit(t, p)
	p.waitLog(t, `grace period over`)
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}
