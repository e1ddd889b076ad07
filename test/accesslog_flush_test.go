package test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestAccessLogFlushedAtShutdown: access lines to a file are buffered (one
// write(2) for many), yet none is lost when the proxy stops right after
// the last tunnel ended: every tunnel has its whole line, in the file,
// once sluice has exited.
func TestAccessLogFlushedAtShutdown(t *testing.T) {
	const tunnels = 40
	p := startSluice(t, "access_log: access.log\nlog_format: squid\n", nil)
	echo := newTCPEcho(t)
	for i := range tunnels {
		c, err := net.DialTimeout("tcp", p.addr, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(20 * time.Second))
		fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", echo.addr, echo.addr)
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("tunnel %d: %v %v", i, resp, err)
		}
		msg := fmt.Sprintf("\x00tunnel %d", i)
		c.Write([]byte(msg))
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(br, got); err != nil || string(got) != msg {
			t.Fatalf("tunnel %d echo: %q %v", i, got, err)
		}
		c.(*net.TCPConn).CloseWrite()
		if _, err := br.ReadByte(); err == nil { // the proxy's EOF: the tunnel is over
			t.Fatalf("tunnel %d: a byte after the echo", i)
		}
		c.Close()
	}
	// Stop at once: the last tunnels' lines may still be in the buffer
	// (or not yet logged: shutdown waits for them).
	p.stop(t)
	b, err := os.ReadFile(filepath.Join(p.dir, "access.log"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(lines) != tunnels {
		t.Fatalf("%d access lines after shutdown, want %d:\n%s", len(lines), tunnels, b)
	}
	for _, l := range lines {
		if f := strings.Fields(l); len(f) != 10 || f[5] != "CONNECT" || f[6] != echo.addr {
			t.Fatalf("a line cut, merged or wrong: %q", l)
		}
	}
}
