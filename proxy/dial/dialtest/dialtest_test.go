package dialtest

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"slices"
	"testing"
	"time"
)

// TestStartOrigin: the banner comes first, each line is acknowledged with
// the count so far, and a half-close gets the final count and EOF.
func TestStartOrigin(t *testing.T) {
	tests := []struct {
		name, banner string
	}{
		{"banner", "220 hello\r\n"},
		{"silent", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := StartOrigin(t, tt.banner)
			if host, port, _ := net.SplitHostPort(o.Addr()); host != "127.0.0.1" || port != o.Port() {
				t.Fatalf("Addr %s, Port %s", o.Addr(), o.Port())
			}
			c, err := net.Dial("tcp", o.Addr())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			io.WriteString(c, "ping\nta")
			c.(*net.TCPConn).CloseWrite()
			got, err := io.ReadAll(bufio.NewReader(c))
			if want := tt.banner + "ack 5\ngot 7\n"; string(got) != want || err != nil {
				t.Fatalf("got %q (%v), want %q", got, err, want)
			}
		})
	}
}

// TestShared: cleanups registered through Shared.TB wait for Close, which
// runs them last first; the test's own cleanups are untouched.
func TestShared(t *testing.T) {
	var s Shared
	var ran []int
	t.Run("starter", func(t *testing.T) {
		tb := s.TB(t)
		tb.Cleanup(func() { ran = append(ran, 1) })
		tb.Cleanup(func() { ran = append(ran, 2) })
		t.Cleanup(func() { ran = append(ran, 0) })
	})
	if !slices.Equal(ran, []int{0}) {
		t.Fatalf("after the test: ran %v, want [0]", ran)
	}
	s.Close()
	s.Close() // forgets what it ran
	if !slices.Equal(ran, []int{0, 2, 1}) {
		t.Fatalf("after Close: ran %v, want [0 2 1]", ran)
	}
}

// TestSelfSigned: a client trusting the PEM certificate completes a TLS
// handshake with a server using the tls.Certificate, by IP and by name.
func TestSelfSigned(t *testing.T) {
	cert, certPEM, keyPEM := SelfSigned(t)
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		t.Fatalf("PEM pair: %v", err)
	}
	ln := tls.NewListener(Listen(t), &tls.Config{Certificates: []tls.Certificate{cert}})
	s := Serve(t, ln, func(c net.Conn) { c.(*tls.Conn).Handshake() })
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(certPEM)
	for _, name := range []string{"127.0.0.1", "localhost"} {
		c, err := tls.Dial("tcp", s.Addr(), &tls.Config{RootCAs: roots, ServerName: name})
		if err != nil {
			t.Fatalf("handshake as %s: %v", name, err)
		}
		c.Close()
	}
}

// TestProcURL: credentials go into the URL only when set.
func TestProcURL(t *testing.T) {
	tests := []struct {
		p    *Proc
		want string
	}{
		{&Proc{Scheme: "http", Addr: "127.0.0.1:3128"}, "http://127.0.0.1:3128"},
		{&Proc{Scheme: "socks5h", Addr: "127.0.0.1:1080", User: "u", Pass: "p w"}, "socks5h://u:p%20w@127.0.0.1:1080"},
	}
	for _, tt := range tests {
		u := tt.p.URL()
		if u.String() != tt.want {
			t.Errorf("URL() = %s, want %s", u, tt.want)
		}
		if u == tt.p.URL() {
			t.Error("URL() returned the same URL twice; callers may change theirs")
		}
	}
}
