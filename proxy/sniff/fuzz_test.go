package sniff

import (
	"bytes"
	"crypto/tls"
	"errors"
	"testing"
)

// FuzzParse feeds arbitrary first bytes to Parse. It checks that nothing
// panics, that Data is the input, that a name is bounded and printable,
// and that the answer does not change when the input is cut short and then
// completed (reassembly is consistent): every prefix of a complete input
// is either incomplete or gives the same answer.
func FuzzParse(f *testing.F) {
	real := clientHello(f, &tls.Config{ServerName: "blocked.test"})
	msg := real[recordHeaderLen:]
	f.Add(real)
	f.Add(records(msg, 1))
	f.Add(records(msg, 13))
	f.Add(clientHello(f, &tls.Config{ServerName: "hidden.test", MinVersion: tls.VersionTLS13,
		EncryptedClientHelloConfigList: echConfigList(f, "public.test")}))
	f.Add(records(helloMsg(sni("a.test", "b.test")), 100))
	f.Add(records(helloMsg(sni("a.test"), ext{extEncryptedHello, []byte{0}}), 100))
	f.Add(records(helloMsg(ext{10, []byte{0, 2, 0, 29}}), 100))
	f.Add([]byte("GET / HTTP/1.1\r\nHost: blocked.test\r\n\r\n"))
	f.Add([]byte("GET http://a.test/ HTTP/1.1\r\nHost: b.test\r\n\r\n"))
	f.Add([]byte("CONNECT a.test:443 HTTP/1.1\r\n\r\n"))
	f.Add([]byte("SSH-2.0-x\r\n"))
	f.Add([]byte{22, 3, 1, 0, 0, 22, 3, 1, 0, 4, 1, 0, 0, 0})
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) > MaxBytes {
			return
		}
		r, done := Parse(in)
		if !bytes.Equal(r.Data, in) {
			t.Fatal("Data is not the input")
		}
		if !done {
			if r.Name != "" || r.Err != nil {
				t.Fatalf("incomplete but name %q err %v", r.Name, r.Err)
			}
			return
		}
		if r.Name != "" {
			if r.Err != nil {
				t.Fatalf("name %q with err %v", r.Name, r.Err)
			}
			if len(r.Name) > MaxBytes || !printable([]byte(r.Name)) {
				t.Fatalf("bad name %q", r.Name)
			}
			if r.Proto != TLS && r.Proto != HTTP {
				t.Fatalf("name %q from proto %v", r.Name, r.Proto)
			}
		} else if r.Proto == TLS || r.Proto == HTTP {
			if r.Err == nil {
				t.Fatal("no name and no error")
			}
			if !errors.Is(r.Err, ErrNoName) && !errors.Is(r.Err, ErrMalformed) && !errors.Is(r.Err, ErrTooLarge) && !errors.Is(r.Err, ErrAmbiguous) {
				t.Fatalf("unexpected error %v", r.Err)
			}
		}
		// A shorter prefix never reaches a different final answer.
		for _, n := range []int{1, len(in) / 2, len(in) - 1} {
			if n <= 0 || n >= len(in) {
				continue
			}
			p, pdone := Parse(in[:n])
			if pdone && p.Proto != r.Proto {
				t.Fatalf("prefix of %d bytes is %v, whole input %v", n, p.Proto, r.Proto)
			}
		}
	})
}
