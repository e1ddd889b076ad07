package test

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestTunnelSocketsHaveNoKeepAlive holds one CONNECT and one SOCKS5 tunnel
// open and asks ss(8) for the timers of the proxy's four sockets (two
// accepted, two dialed to the origin): none may run a TCP keep-alive timer,
// which Go sets on every socket unless told not to (four setsockopt(2)
// calls each). The test's own client sockets keep Go's default, so ss is
// seen to show keep-alive timers where there are some.
func TestTunnelSocketsHaveNoKeepAlive(t *testing.T) {
	ssBin := requireTool(t, "ss")
	p := startSluice(t, "", nil)
	echo := newTCPEcho(t)

	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for _, kind := range []string{"connect", "socks5"} {
		c, err := net.DialTimeout("tcp", p.addr, 10*time.Second) // Go's default: keep-alive on
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		c.SetDeadline(time.Now().Add(20 * time.Second))
		br := bufio.NewReader(c)
		switch kind {
		case "connect":
			fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", echo.addr, echo.addr)
			resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("CONNECT: %v %v", resp, err)
			}
		case "socks5":
			ap := netip.MustParseAddrPort(echo.addr)
			a4 := ap.Addr().As4()
			req := append([]byte{5, 1, 0, 5, 1, 0, 1}, a4[:]...)
			c.Write(binary.BigEndian.AppendUint16(req, ap.Port()))
			var rep [2 + 10]byte
			if _, err := io.ReadFull(br, rep[:]); err != nil || rep[1] != 0 {
				t.Fatalf("SOCKS5: % x %v", rep, err)
			}
		}
		msg := []byte("\x00\x01 through a " + kind + " tunnel")
		c.Write(msg)
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(br, got); err != nil || string(got) != string(msg) {
			t.Fatalf("%s echo: %q %v", kind, got, err)
		}
	}

	pport := p.addr[strings.LastIndexByte(p.addr, ':')+1:]
	eport := echo.addr[strings.LastIndexByte(echo.addr, ':')+1:]
	out, err := exec.Command(ssBin, "-tnoH", "state", "established",
		fmt.Sprintf("( sport = :%s or dport = :%s or dport = :%s )", pport, pport, eport)).CombinedOutput()
	if err != nil {
		t.Fatalf("ss: %v\n%s", err, out)
	}
	var proxySide, clientSide []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) < 4 {
			continue
		}
		local, peer := f[2], f[3]
		switch {
		case local == p.addr || peer == echo.addr: // accepted by the proxy, or dialed by it
			proxySide = append(proxySide, line)
		case peer == p.addr:
			clientSide = append(clientSide, line)
		}
	}
	if len(proxySide) != 4 || len(clientSide) != 2 {
		t.Fatalf("ss shows %d proxy sockets (want 4) and %d client sockets (want 2):\n%s", len(proxySide), len(clientSide), out)
	}
	for _, l := range clientSide {
		if !strings.Contains(l, "keepalive") {
			t.Fatalf("the test's own socket shows no keep-alive timer, so ss cannot tell:\n%s", out)
		}
	}
	for _, l := range proxySide {
		if strings.Contains(l, "keepalive") {
			t.Errorf("a proxy socket runs a TCP keep-alive timer: %s", l)
		}
	}
}
