package test

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// TestLimitsFreedAfterChurn: 800 SOCKS5 and CONNECT tunnels, whose
// clients end every way a client can (half-close after the echo, close
// at once after the handshake, data then close before the origin
// answered, a RST), with the client->origin direction on the accepting
// worker or not: afterwards every slot of max_conns is free again, so
// that max_conns tunnels open at once and one more is refused.
func TestLimitsFreedAfterChurn(t *testing.T) {
	const maxConns = 24
	echo := newTCPEcho(t)
	p := startSluice(t, fmt.Sprintf("default: allow\nlimits: {max_conns: %d, per_client: %d}\n", maxConns, maxConns), nil)
	ap := netip.MustParseAddrPort(echo.addr)
	ip := ap.Addr().As4()
	socks := append([]byte{5, 1, 0, 5, 1, 0, 1}, ip[:]...)
	socks = binary.BigEndian.AppendUint16(socks, ap.Port())
	connect := []byte("CONNECT " + echo.addr + " HTTP/1.1\r\nHost: " + echo.addr + "\r\n\r\n")
	one := func(i int) error {
		c, err := net.DialTimeout("tcp", p.addr, 10*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(20 * time.Second))
		hs, replyLen := socks, 12
		if i%2 == 1 {
			hs, replyLen = connect, len("HTTP/1.1 200 Connection established\r\n\r\n")
		}
		data := []byte(fmt.Sprintf("\x00tunnel %d\n", i))
		switch i / 2 % 4 {
		case 0: // echo, half-close, read to EOF
			c.Write(append(append([]byte(nil), hs...), data...))
			c.(*net.TCPConn).CloseWrite()
			got, err := io.ReadAll(c)
			if err == nil && (bytes.HasPrefix(got, []byte("HTTP/1.1 503 ")) || len(got) == 12 && got[3] == 0x01) {
				return nil // refused: the churn's ended tunnels not yet counted off
			}
			if err != nil || len(got) != replyLen+len(data) || !bytes.HasSuffix(got, data) {
				return fmt.Errorf("tunnel %d: %q, %v", i, got, err)
			}
		case 1: // close once the handshake is answered
			c.Write(hs)
			if _, err := io.ReadFull(c, make([]byte, replyLen)); err != nil {
				return fmt.Errorf("tunnel %d: %v", i, err)
			}
		case 2: // data and close before the origin answered
			c.Write(append(append([]byte(nil), hs...), data...))
		case 3: // a RST after the data
			c.Write(append(append([]byte(nil), hs...), data...))
			c.(*net.TCPConn).SetLinger(0)
		}
		return nil
	}
	const clients, each = 16, 50
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for w := range clients {
		wg.Go(func() {
			for i := range each {
				if err := one(w*each + i); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// Every slot comes free: max_conns tunnels open at once (retried while
	// the last of the churn end), then one more is refused.
	var open []net.Conn
	defer func() {
		for _, c := range open {
			c.Close()
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for len(open) < maxConns {
		c, err := net.DialTimeout("tcp", p.addr, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(20 * time.Second))
		c.Write(connect)
		resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: http.MethodConnect})
		if err == nil && resp.StatusCode == 200 {
			open = append(open, c)
			continue
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatalf("only %d of max_conns %d tunnels open 10 s after the churn (%v %v): slots leaked", len(open), maxConns, resp, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code, c, _ := limitConnect(t, "127.0.0.1", p.addr, echo.addr); code != 503 {
		t.Fatalf("tunnel %d beyond max_conns: %d, want 503", maxConns+1, code)
	} else {
		c.Close()
	}
}
