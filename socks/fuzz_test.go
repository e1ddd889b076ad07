package socks

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
)

func FuzzGreeting(f *testing.F) {
	f.Add(greet(0))
	f.Add(greet(0, 2))
	f.Add([]byte{5, 255})
	f.Add([]byte{4, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := readGreeting(bytes.NewReader(b))
		if err != nil {
			return
		}
		if len(b) < 2 || len(m) != int(b[1]) || !bytes.Equal(m, b[2:2+len(m)]) {
			t.Fatalf("methods %v from % x", m, b)
		}
	})
}

func FuzzUserPass(f *testing.F) {
	f.Add(userPass("alice", "s3cret"))
	f.Add(userPass("", ""))
	f.Add([]byte{1, 200, 'a'})
	f.Add([]byte{2, 1, 'a', 1, 'b'})
	f.Fuzz(func(t *testing.T, b []byte) {
		u, p, err := readUserPass(bytes.NewReader(b))
		if err != nil {
			return
		}
		if got := userPass(u, p); !bytes.Equal(got, b[:len(got)]) {
			t.Fatalf("re-encoded % x, input % x", got, b)
		}
	})
}

func FuzzRequest(f *testing.F) {
	f.Add(req5(cmdConnect, "127.0.0.1", 80))
	f.Add(req5(cmdConnect, "::1", 443))
	f.Add(req5(cmdConnect, "example.com", 8080))
	f.Add(req5(cmdUDPAssociate, "0.0.0.0", 0))
	f.Add(req5(cmdBind, "10.0.0.1", 1))
	f.Add([]byte{5, 1, 0, 3, 0, 0, 80})
	f.Add([]byte{5, 1, 0, 9})
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := readRequest(bytes.NewReader(b))
		if err != nil {
			return
		}
		if req.cmd != cmdConnect && req.cmd != cmdUDPAssociate {
			t.Fatalf("command %d accepted", req.cmd)
		}
		if !req.name {
			if _, err := netip.ParseAddr(req.host); err != nil {
				t.Fatalf("IP address type gave %q", req.host)
			}
			return
		}
		// A name that reads as an IP would re-encode as an address type.
		if net.ParseIP(req.host) == nil {
			got := req5(req.cmd, req.host, req.port)
			got[2] = b[2] // RSV is ignored
			if !bytes.Equal(got, b[:len(got)]) {
				t.Fatalf("re-encoded % x, input % x", got, b)
			}
		}
	})
}

func FuzzSocks4(f *testing.F) {
	f.Add(req4(1, [4]byte{127, 0, 0, 1}, 80, "user", ""))
	f.Add(req4(1, [4]byte{0, 0, 0, 1}, 80, "", "example.com"))
	f.Add(req4(2, [4]byte{1, 2, 3, 4}, 21, "", ""))
	f.Add([]byte{4, 1, 0, 80, 0, 0, 0, 1, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := readSocks4(bytes.NewReader(b))
		if err != nil {
			return
		}
		if req.cmd != cmdConnect || req.host == "" || len(req.user) > maxString || len(req.host) > maxString {
			t.Fatalf("accepted %+v", req)
		}
		if bytes.IndexByte([]byte(req.host+req.user), 0) >= 0 {
			t.Fatalf("NUL inside a field: %+v", req)
		}
	})
}

func FuzzUDPHeader(f *testing.F) {
	f.Add(datagram("127.0.0.1", 53, "payload"))
	f.Add(datagram("::1", 53, ""))
	f.Add(datagram("example.com", 443, "x"))
	f.Add([]byte{0, 0, 1, 1, 127, 0, 0, 1, 0, 53})
	f.Add([]byte{0, 0, 0, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		host, name, port, payload, err := parseUDPHeader(b)
		if err != nil {
			return
		}
		if len(payload) > len(b) || !bytes.HasSuffix(b, payload) {
			t.Fatal("payload is not the datagram's tail")
		}
		if name {
			return
		}
		a := netip.MustParseAddr(host)
		if b[3] == atypIPv6 && a.Is4() {
			return // IPv4-mapped IPv6 is unmapped, and re-encodes as IPv4
		}
		got := append(appendUDPHeader(nil, netip.AddrPortFrom(a, port)), payload...)
		if !bytes.Equal(got[2:], b[2:]) { // RSV is ignored
			t.Fatalf("re-encoded % x, input % x", got, b)
		}
	})
}
