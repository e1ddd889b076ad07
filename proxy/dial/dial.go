// Package dial is the one shared dialer: direct connections with timeouts
// and a hosts map, or chains of upstream proxies (http, https, socks5,
// socks5h, socks4a). It has no policy: it dials what it is told to.
// Its failures are typed (*Error) so that front ends can answer precisely.
package dial

import (
	"context"
	"net"
)

// Dialer opens connections. Every dial takes a context; there is no
// context-less Dial, because the fallback for one can leak a goroutine.
type Dialer interface {
	DialContext(ctx context.Context, network, addr string) (net.Conn, error)
}

// Kind classifies a dial failure.
type Kind uint8

// The kinds of dial failure, each with its own answer to the client
// (see the table in the README).
const (
	// KindOther is any failure not listed below: SOCKS 0x01, HTTP 502.
	KindOther Kind = iota
	// KindDNS means the name does not resolve: SOCKS 0x04, HTTP 502.
	KindDNS
	// KindHostUnreachable means no route to the host: SOCKS 0x04, HTTP 502.
	KindHostUnreachable
	// KindNetUnreachable means the network is unreachable: SOCKS 0x03, HTTP 502.
	KindNetUnreachable
	// KindRefused means the target refused the connection: SOCKS 0x05, HTTP 502.
	KindRefused
	// KindTimeout means the dial timed out: SOCKS 0x06, HTTP 504.
	KindTimeout
	// KindUpstream means an upstream proxy failed or refused the request: SOCKS 0x01, HTTP 502.
	KindUpstream
	// KindUpstreamAuth means an upstream proxy rejected our credentials: SOCKS 0x01, HTTP 502.
	KindUpstreamAuth
)

var kindNames = [...]string{"other", "dns", "host unreachable", "network unreachable", "refused", "timeout", "upstream failed", "upstream auth failed"}

// String names the kind for logs.
func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "unknown"
}

// Error is a failed dial. Its message never contains a password.
type Error struct {
	// Kind classifies the failure.
	Kind Kind
	// Addr is the target that was dialed.
	Addr string
	// Upstream names the upstream route, or "" for a direct dial.
	Upstream string
	// Hop is the 1-based hop of the chain that failed, or 0 for a direct dial
	// or the final connection to the origin.
	Hop int
	// HopAddr is the redacted URL of the failing hop, or "".
	HopAddr string
	// Err is the underlying error.
	Err error
}

func (e *Error) Error() string {
	s := "dial: " + e.Addr + ": " + e.Kind.String()
	if e.Upstream != "" {
		s += " via upstream " + e.Upstream
	}
	if e.HopAddr != "" {
		s += " (hop " + e.HopAddr + ")"
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }
