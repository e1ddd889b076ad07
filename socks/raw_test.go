package socks

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"os"
	"syscall"
	"testing"

	"github.com/sluiceproxy/sluice/filter"
	"github.com/sluiceproxy/sluice/proxy/dial"
)

// Raw byte builders for requests.

func greet(methods ...byte) []byte { return append([]byte{5, byte(len(methods))}, methods...) }

func userPass(u, p string) []byte {
	b := append([]byte{1, byte(len(u))}, u...)
	return append(append(b, byte(len(p))), p...)
}

func req5(cmd byte, host string, port uint16) []byte {
	b := []byte{5, cmd, 0}
	if ip := net.ParseIP(host); ip != nil {
		if v4 := ip.To4(); v4 != nil {
			b = append(append(b, atypIPv4), v4...)
		} else {
			b = append(append(b, atypIPv6), ip...)
		}
	} else {
		b = append(append(b, atypDomain, byte(len(host))), host...)
	}
	return binary.BigEndian.AppendUint16(b, port)
}

func req4(cmd byte, ip [4]byte, port uint16, user, host string) []byte {
	b := binary.BigEndian.AppendUint16([]byte{4, cmd}, port)
	b = append(append(append(b, ip[:]...), user...), 0)
	if host != "" {
		b = append(append(b, host...), 0)
	}
	return b
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// fail5 is a SOCKS5 failure reply with a zero bound address.
func fail5(code byte) []byte { return []byte{5, code, 0, 1, 0, 0, 0, 0, 0, 0} }

var fail4 = []byte{0, 0x5B, 0, 0, 0, 0, 0, 0}

func dialErr(err error) func(context.Context, string, string, string) (net.Conn, error) {
	return func(context.Context, string, string, string) (net.Conn, error) { return nil, err }
}

func syscallErr(errno syscall.Errno) error {
	return &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", errno)}
}

// TestRawReplies sends raw bytes and checks every byte the server answers
// before it closes the connection: one case per reply code and malformed input.
func TestRawReplies(t *testing.T) {
	closedPort := func() uint16 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return uint16(ln.Addr().(*net.TCPAddr).Port)
	}()
	blocker := &recordingPolicy{block: map[string]bool{"blocked.test": true, "10.9.9.9": true}}
	auth := staticAuth{"alice", "s3cret"}
	ok5 := []byte{5, 0}
	panicky := policyFunc(func(filter.Request) filter.Decision { panic("policy exploded") })
	local := "127.0.0.1"

	cases := []struct {
		name string
		srv  *Server
		send []byte
		want []byte
	}{
		// Greeting and method selection.
		{"no acceptable method", &Server{Policy: allowAll}, greet(methodUserPass), []byte{5, 0xFF}},
		{"zero methods", &Server{Policy: allowAll}, greet(), []byte{5, 0xFF}},
		{"auth required but not offered", &Server{Policy: allowAll, Auth: auth}, greet(methodNoAuth), []byte{5, 0xFF}},
		{"wrong password", &Server{Policy: allowAll, Auth: auth}, cat(greet(0, 2), userPass("alice", "nope")), []byte{5, 2, 1, 1}},
		{"unknown user", &Server{Policy: allowAll, Auth: auth}, cat(greet(2), userPass("mallory", "s3cret")), []byte{5, 2, 1, 1}},
		{"bad subnegotiation version", &Server{Policy: allowAll, Auth: auth}, cat(greet(2), []byte{5, 1}), []byte{5, 2}},
		{"unknown version byte", &Server{Policy: allowAll}, []byte("GET / HTTP/1.1\r\n\r\n"), nil},
		{"truncated greeting", &Server{Policy: allowAll}, []byte{5, 3, 0}, nil},

		// Policy.
		{"blocked name 0x02", &Server{Policy: blocker}, cat(greet(0), req5(cmdConnect, "blocked.test", 80)), cat(ok5, fail5(0x02))},
		{"blocked name normalized 0x02", &Server{Policy: blocker}, cat(greet(0), req5(cmdConnect, "BLOCKED.Test.", 80)), cat(ok5, fail5(0x02))},
		{"blocked ip 0x02", &Server{Policy: blocker}, cat(greet(0), req5(cmdConnect, "10.9.9.9", 443)), cat(ok5, fail5(0x02))},
		{"nil policy blocks 0x02", &Server{}, cat(greet(0), req5(cmdConnect, local, 80)), cat(ok5, fail5(0x02))},
		{"invalid host name 0x04", &Server{Policy: allowAll}, cat(greet(0), req5(cmdConnect, "bad host", 80)), cat(ok5, fail5(0x04))},
		{"panicking policy 0x01", &Server{Policy: panicky}, cat(greet(0), req5(cmdConnect, local, 80)), cat(ok5, fail5(0x01))},

		// Dial errors, typed and raw.
		{"refused 0x05", &Server{Policy: allowAll}, cat(greet(0), req5(cmdConnect, local, closedPort)), cat(ok5, fail5(0x05))},
		{"raw dns error 0x04", &Server{Policy: allowAll, Dial: dialErr(&net.DNSError{Err: "no such host", Name: "nx.test", IsNotFound: true})}, cat(greet(0), req5(cmdConnect, "nx.test", 80)), cat(ok5, fail5(0x04))},
		{"kind dns 0x04", &Server{Policy: allowAll, Dial: dialErr(&dial.Error{Kind: dial.KindDNS})}, cat(greet(0), req5(cmdConnect, "nx.test", 80)), cat(ok5, fail5(0x04))},
		{"kind host unreachable 0x04", &Server{Policy: allowAll, Dial: dialErr(&dial.Error{Kind: dial.KindHostUnreachable})}, cat(greet(0), req5(cmdConnect, local, 80)), cat(ok5, fail5(0x04))},
		{"raw host unreachable 0x04", &Server{Policy: allowAll, Dial: dialErr(syscallErr(syscall.EHOSTUNREACH))}, cat(greet(0), req5(cmdConnect, local, 80)), cat(ok5, fail5(0x04))},
		{"kind net unreachable 0x03", &Server{Policy: allowAll, Dial: dialErr(&dial.Error{Kind: dial.KindNetUnreachable})}, cat(greet(0), req5(cmdConnect, local, 80)), cat(ok5, fail5(0x03))},
		{"raw net unreachable 0x03", &Server{Policy: allowAll, Dial: dialErr(syscallErr(syscall.ENETUNREACH))}, cat(greet(0), req5(cmdConnect, local, 80)), cat(ok5, fail5(0x03))},
		{"kind refused 0x05", &Server{Policy: allowAll, Dial: dialErr(&dial.Error{Kind: dial.KindRefused, Err: syscall.ECONNREFUSED})}, cat(greet(0), req5(cmdConnect, local, 80)), cat(ok5, fail5(0x05))},
		{"kind timeout 0x06", &Server{Policy: allowAll, Dial: dialErr(&dial.Error{Kind: dial.KindTimeout})}, cat(greet(0), req5(cmdConnect, local, 80)), cat(ok5, fail5(0x06))},
		{"raw context deadline 0x06", &Server{Policy: allowAll, Dial: dialErr(context.DeadlineExceeded)}, cat(greet(0), req5(cmdConnect, local, 80)), cat(ok5, fail5(0x06))},
		{"raw i/o timeout 0x06", &Server{Policy: allowAll, Dial: dialErr(&net.OpError{Op: "dial", Err: os.ErrDeadlineExceeded})}, cat(greet(0), req5(cmdConnect, local, 80)), cat(ok5, fail5(0x06))},
		{"kind upstream 0x01", &Server{Policy: allowAll, Dial: dialErr(&dial.Error{Kind: dial.KindUpstream, Err: syscall.ECONNREFUSED})}, cat(greet(0), req5(cmdConnect, local, 80)), cat(ok5, fail5(0x01))},
		{"kind upstream auth 0x01", &Server{Policy: allowAll, Dial: dialErr(&dial.Error{Kind: dial.KindUpstreamAuth})}, cat(greet(0), req5(cmdConnect, local, 80)), cat(ok5, fail5(0x01))},
		{"kind upstream refused 0x02", &Server{Policy: allowAll, Dial: dialErr(&dial.Error{Kind: dial.KindUpstreamRefused})}, cat(greet(0), req5(cmdConnect, local, 80)), cat(ok5, fail5(0x02))},
		{"other error 0x01", &Server{Policy: allowAll, Dial: dialErr(errors.New("boom"))}, cat(greet(0), req5(cmdConnect, local, 80)), cat(ok5, fail5(0x01))},

		// Commands and address types.
		{"bind 0x07", &Server{Policy: allowAll}, cat(greet(0), req5(cmdBind, local, 80)), cat(ok5, fail5(0x07))},
		{"udp disabled 0x07", &Server{Policy: allowAll}, cat(greet(0), req5(cmdUDPAssociate, "0.0.0.0", 0)), cat(ok5, fail5(0x07))},
		{"unknown command 0x07", &Server{Policy: allowAll}, cat(greet(0), req5(0x09, local, 80)), cat(ok5, fail5(0x07))},
		{"address type 0x08", &Server{Policy: allowAll}, cat(greet(0), []byte{5, 1, 0, 0x05}), cat(ok5, fail5(0x08))},
		{"empty domain 0x01", &Server{Policy: allowAll}, cat(greet(0), []byte{5, 1, 0, 3, 0, 0, 80}), cat(ok5, fail5(0x01))},
		{"bad request version 0x01", &Server{Policy: allowAll}, cat(greet(0), []byte{4, 1, 0}), cat(ok5, fail5(0x01))},
		{"truncated request", &Server{Policy: allowAll}, cat(greet(0), []byte{5, 1, 0, 1, 127}), ok5},

		// SOCKS4 and 4a.
		{"socks4 blocked 0x5B", &Server{Policy: blocker}, req4(1, [4]byte{10, 9, 9, 9}, 443, "bob", ""), fail4},
		{"socks4a blocked 0x5B", &Server{Policy: blocker}, req4(1, [4]byte{0, 0, 0, 1}, 80, "", "blocked.test"), fail4},
		{"socks4 refused 0x5B", &Server{Policy: allowAll}, req4(1, [4]byte{127, 0, 0, 1}, closedPort, "", ""), fail4},
		{"socks4 refused while auth on", &Server{Policy: allowAll, Auth: auth}, req4(1, [4]byte{127, 0, 0, 1}, 80, "alice", ""), fail4},
		{"socks4 bind 0x5B", &Server{Policy: allowAll}, req4(2, [4]byte{127, 0, 0, 1}, 80, "", ""), fail4},
		{"socks4a empty name 0x5B", &Server{Policy: allowAll}, append(req4(1, [4]byte{0, 0, 0, 9}, 80, "", ""), 0), fail4},
		{"socks4 user id too long 0x5B", &Server{Policy: allowAll}, req4(1, [4]byte{127, 0, 0, 1}, 80, string(bytes.Repeat([]byte{'u'}, 256)), "")[:8+256], fail4},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.srv
			addr := start(t, s)
			c := dialRaw(t, addr)
			if _, err := c.Write(tc.send); err != nil {
				t.Fatal(err)
			}
			c.(*net.TCPConn).CloseWrite() // truncated input ends with EOF, not a timeout
			if got := readUntilClose(c); !bytes.Equal(got, tc.want) {
				t.Errorf("reply = % x, want % x", got, tc.want)
			}
		})
	}
	for _, r := range blocker.requests() {
		if r.Host == "blocked.test." || r.Host == "BLOCKED.Test." {
			t.Errorf("policy saw an unnormalized host %q", r.Host)
		}
	}
}
