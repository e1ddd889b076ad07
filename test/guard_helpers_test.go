package test

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	xproxy "golang.org/x/net/proxy"
)

// countOrigin is an HTTP origin that counts the TCP connections it
// accepts: the proof that a refused request reached nothing.
type countOrigin struct {
	accepts atomic.Int64
	addr    string // ip:port
	port    string
}

type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// newCountOrigin listens on addr ("127.0.0.9:0", "127.0.0.1:0", ...) and
// answers every request with "origin <addr> <path>".
func newCountOrigin(t *testing.T, addr string) *countOrigin {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	o := &countOrigin{addr: ln.Addr().String()}
	_, o.port, _ = net.SplitHostPort(o.addr)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "origin %s %s", o.addr, r.URL.Path)
	}), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(countingListener{ln, &o.accepts})
	t.Cleanup(func() { srv.Close() })
	return o
}

// dialFrom connects to addr from the local address from (a 127.0.0.0/8
// address: the client the rules see).
func dialFrom(t *testing.T, from, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if from != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	t.Cleanup(func() { c.Close() })
	return c
}

// connectFrom sends CONNECT target from the client address from and returns
// the response (its body read) and the connection.
func connectFrom(t *testing.T, from, proxy, target string) (*http.Response, string, net.Conn, *bufio.Reader) {
	t.Helper()
	c := dialFrom(t, from, proxy)
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		t.Fatalf("CONNECT %s: %v", target, err)
	}
	body := ""
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		body = string(b)
	}
	return resp, body, c, br
}

// socks5From sends a SOCKS5 CONNECT to host:port from the client address
// from: an IP literal as an address (type 1 or 4), anything else as a name
// (type 3). It returns the reply code and the connection.
func socks5From(t *testing.T, from, proxy, host string, port int) (byte, net.Conn, *bufio.Reader) {
	t.Helper()
	c := dialFrom(t, from, proxy)
	br := bufio.NewReader(c)
	c.Write([]byte{5, 1, 0})
	var sel [2]byte
	if _, err := io.ReadFull(br, sel[:]); err != nil || sel != [2]byte{5, 0} {
		t.Fatalf("SOCKS5 greeting: %v %x", err, sel)
	}
	req := []byte{5, 1, 0}
	if a, err := netip.ParseAddr(host); err == nil && a.Is4() {
		req = append(append(req, 1), a.AsSlice()...)
	} else if err == nil {
		req = append(append(req, 4), a.AsSlice()...)
	} else {
		req = append(append(req, 3, byte(len(host))), host...)
	}
	req = binary.BigEndian.AppendUint16(req, uint16(port))
	c.Write(req)
	var head [4]byte
	if _, err := io.ReadFull(br, head[:]); err != nil {
		t.Fatalf("SOCKS5 reply to %s:%d: %v", host, port, err)
	}
	if head[1] == 0 {
		skip := 6
		if head[3] == 4 {
			skip = 18
		}
		io.ReadFull(br, make([]byte, skip))
	}
	return head[1], c, br
}

// httpClientFrom is Go's net/http client using the HTTP proxy, from the
// client address from. Its requests keep their connections alive, so that
// the proxy pools its own connections to the origins too.
func httpClientFrom(t *testing.T, from, proxy string) *http.Client {
	pu, _ := url.Parse("http://" + proxy)
	d := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	tr := &http.Transport{Proxy: http.ProxyURL(pu), DialContext: d.DialContext}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Timeout: 20 * time.Second, Transport: tr}
}

// get fetches u with cl and returns the status, the X-Sluice-Block header
// and the body.
func get(t *testing.T, cl *http.Client, u string) (int, string, string) {
	t.Helper()
	resp, err := cl.Get(u)
	if err != nil {
		return 0, "", err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	return resp.StatusCode, resp.Header.Get("X-Sluice-Block"), string(b)
}

// xSOCKS5From dials host:port through the SOCKS5 front end with
// golang.org/x/net/proxy, from the client address from.
func xSOCKS5From(from, proxy, hostport string) (net.Conn, error) {
	fwd := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	d, err := xproxy.SOCKS5("tcp", proxy, nil, fwd)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return d.(xproxy.ContextDialer).DialContext(ctx, "tcp", hostport)
}

func portOf(addr string) int {
	_, p, _ := net.SplitHostPort(addr)
	n, _ := strconv.Atoi(p)
	return n
}
