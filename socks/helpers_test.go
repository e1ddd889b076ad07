package socks

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sluiceproxy/sluice/filter"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// policyFunc adapts a function to Policy.
type policyFunc func(filter.Request) filter.Decision

func (f policyFunc) Decide(r filter.Request) filter.Decision { return f(r) }

var allowAll = policyFunc(func(filter.Request) filter.Decision {
	return filter.Decision{Verdict: filter.Allow, Reason: "test allows all"}
})

// blockHosts allows everything but the listed hosts, and records every request.
type recordingPolicy struct {
	mu      sync.Mutex
	block   map[string]bool
	seen    []filter.Request
	blockPt map[uint16]bool
}

func (p *recordingPolicy) Decide(r filter.Request) filter.Decision {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.seen = append(p.seen, r)
	if p.block[r.Host] || p.blockPt[r.Port] {
		return filter.Decision{Verdict: filter.Block, Reason: "domain in block list", Category: "test",
			Rule: filter.RuleRef{Index: 1, File: "test.yaml", Line: 3}}
	}
	return filter.Decision{Verdict: filter.Allow, Reason: "matched rule", Via: "direct"}
}

func (p *recordingPolicy) requests() []filter.Request {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]filter.Request(nil), p.seen...)
}

// staticAuth accepts one user and password.
type staticAuth struct{ user, password string }

func (a staticAuth) Authenticate(_ netip.Addr, u, p string) ([]string, bool) {
	return nil, u == a.user && p == a.password
}

// start serves s on a fresh loopback listener and returns its address.
// Cleanup closes the server and checks that Serve returned nil.
func start(t *testing.T, s *Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve returned %v after Close", err)
		}
	})
	return ln.Addr().String()
}

// echoServer is a TCP origin on loopback that echoes and half-closes.
func echoServer(t *testing.T, network, addr string) string {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				io.Copy(c, c)
				c.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
	return ln.Addr().String()
}

// countingDial dials addresses through a map (name → real address), counts
// calls and records the addresses it was given.
type countingDial struct {
	mu    sync.Mutex
	calls atomic.Int64
	addrs []string
	hosts map[string]string
	err   error // returned instead of dialing when set
}

func (d *countingDial) Dial(ctx context.Context, route, network, addr string) (net.Conn, error) {
	d.calls.Add(1)
	d.mu.Lock()
	d.addrs = append(d.addrs, addr)
	real, ok := d.hosts[addr]
	d.mu.Unlock()
	if d.err != nil {
		return nil, d.err
	}
	if !ok {
		real = addr
	}
	var nd net.Dialer
	return nd.DialContext(ctx, network, real)
}

func (d *countingDial) got() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.addrs...)
}

// dialRaw opens a raw TCP connection to the server with a deadline.
func dialRaw(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { c.Close() })
	return c
}

// readAll reads until EOF or error, at most 1 KiB.
func readUntilClose(c net.Conn) []byte {
	b, _ := io.ReadAll(io.LimitReader(c, 1024))
	return b
}

func isClosed(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed)
}
