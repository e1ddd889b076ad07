package dialtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"sync"
	"testing"
	"time"
)

// Server is a TCP server on loopback. At the cleanup of the test that
// started it, its listener and every open connection are closed and every
// handler goroutine is waited for.
type Server struct {
	ln net.Listener
	wg sync.WaitGroup

	mu    sync.Mutex
	conns map[net.Conn]bool
}

// Addr returns the address the server listens on (127.0.0.1:port).
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Port returns the port the server listens on.
func (s *Server) Port() string {
	_, port, _ := net.SplitHostPort(s.Addr())
	return port
}

// Listen returns a TCP listener on a free port of 127.0.0.1, or fails t.
// Serve closes it; without Serve the caller does.
func Listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// Serve accepts on ln (which may be a TLS listener) until t's cleanup
// and runs handle in a goroutine per connection, closing the connection
// when handle returns.
func Serve(t testing.TB, ln net.Listener, handle func(net.Conn)) *Server {
	t.Helper()
	s := &Server{ln: ln, conns: map[net.Conn]bool{}}
	s.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns[c] = true
			s.mu.Unlock()
			s.wg.Go(func() {
				defer func() {
					c.Close()
					s.mu.Lock()
					delete(s.conns, c)
					s.mu.Unlock()
				}()
				handle(c)
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

// StartOrigin starts an origin that speaks first, to show that no byte is
// lost behind an upstream's answer: it sends banner as soon as a client
// connects (nothing when banner is empty), then counts the bytes it reads.
// After each newline it answers "ack N\n" (N bytes read so far); when the
// client half-closes it answers "got N\n" and closes. A connection lives
// at most 15 s.
func StartOrigin(t testing.TB, banner string) *Server {
	t.Helper()
	return Serve(t, Listen(t), func(c net.Conn) {
		c.SetDeadline(time.Now().Add(15 * time.Second))
		if banner != "" {
			if _, err := io.WriteString(c, banner); err != nil {
				return
			}
		}
		n := 0
		buf := make([]byte, 4096)
		for {
			m, err := c.Read(buf)
			for _, b := range buf[:m] {
				n++
				if b == '\n' {
					fmt.Fprintf(c, "ack %d\n", n)
				}
			}
			if err != nil {
				if errors.Is(err, io.EOF) {
					fmt.Fprintf(c, "got %d\n", n)
				}
				return
			}
		}
	})
}

// SelfSigned makes a CA certificate for 127.0.0.1 and localhost, valid
// from an hour ago to an hour from now, with a fresh P-256 key. It returns
// it as a tls.Certificate for a server, and as PEM: the certificate (for a
// client's root pool) and the PKCS #8 key (for a program's key file).
func SelfSigned(t testing.TB) (cert tls.Certificate, certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "sluice test upstream"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:              []string{"localhost"},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key},
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}
