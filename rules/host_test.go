package rules

import (
	"errors"
	"testing"
)

func TestNormalizeHost(t *testing.T) {
	tests := []struct {
		in, want string
		err      error
	}{
		{"example.com", "example.com", nil},
		{"WWW.Example.COM", "www.example.com", nil},
		{"example.com.", "example.com", nil},
		{"  example.com ", "example.com", nil},
		{"_dmarc.example.com", "_dmarc.example.com", nil},
		{"my_host.Example.com", "my_host.example.com", nil},
		{"xn--bcher-kva.example", "xn--bcher-kva.example", nil},
		{"WWW.Bücher.Example.", "www.xn--bcher-kva.example", nil},
		{"bücher.example", "xn--bcher-kva.example", nil},
		{"ＥＸＡＭＰＬＥ.com", "example.com", nil}, // full-width letters map to ASCII
		{"пример.рф", "xn--e1afmkfd.xn--p1ai", nil},
		{"a-b.c-d", "a-b.c-d", nil},
		{"localhost", "localhost", nil},
		{"1.2.3.4", "1.2.3.4", nil},
		{"10.0.0.1.", "10.0.0.1", nil},
		{"::1", "::1", nil},
		{"[::1]", "::1", nil},
		{"[2001:DB8:0:0:0:0:0:1]", "2001:db8::1", nil},
		{"2001:0db8::0001", "2001:db8::1", nil},
		{"::ffff:10.0.0.1", "10.0.0.1", nil},
		{"[::ffff:192.0.2.7]", "192.0.2.7", nil},
		{"3com.com", "3com.com", nil},
		{"123.example", "123.example", nil},

		{"", "", ErrEmptyHost},
		{".", "", ErrEmptyHost},
		{"a..b", "", ErrInvalidHost},
		{".example.com", "", ErrInvalidHost},
		{"example.com..", "", ErrInvalidHost},
		{"exa mple.com", "", ErrInvalidHost},
		{"example.com:80", "", ErrInvalidHost},
		{"*.example.com", "", ErrInvalidHost},
		{"http://example.com", "", ErrInvalidHost},
		{"1.2.3", "", ErrInvalidHost},
		{"01.2.3.4", "", ErrInvalidHost},
		{"256.1.1.1", "", ErrInvalidHost},
		{"fe80::1%eth0", "", ErrInvalidHost},
		{"[example.com]", "", ErrInvalidHost},
		{"[1.2.3.4]", "", ErrInvalidHost},
		{"a.b/c", "", ErrInvalidHost},
		{string(make([]byte, 64)) + ".com", "", ErrInvalidHost},
		{"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.com", "", ErrInvalidHost}, // 64-byte label
	}
	for _, tt := range tests {
		got, err := NormalizeHost(tt.in)
		if tt.err != nil {
			if !errors.Is(err, tt.err) {
				t.Errorf("NormalizeHost(%q) = %q, %v; want error %v", tt.in, got, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("NormalizeHost(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
		// Normal form is a fixed point.
		if again, err := NormalizeHost(got); err != nil || again != got {
			t.Errorf("NormalizeHost(%q) = %q, %v; not idempotent", got, again, err)
		}
	}
}

func TestNormalizeHostLongName(t *testing.T) {
	label := "abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0" // 63 bytes
	name := label + "." + label + "." + label + "." + label[:61]               // 253 bytes
	if got, err := NormalizeHost(name); err != nil || got != name {
		t.Errorf("253-byte name: %q, %v", got, err)
	}
	if _, err := NormalizeHost(name + "x"); !errors.Is(err, ErrInvalidHost) {
		t.Errorf("254-byte name: err = %v, want ErrInvalidHost", err)
	}
}

func TestNormalizeHostFastPathAllocs(t *testing.T) {
	for _, h := range []string{"www.example.com", "192.0.2.1", "_sip._tcp.example.org"} {
		allocs := testing.AllocsPerRun(100, func() {
			if _, err := NormalizeHost(h); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Errorf("NormalizeHost(%q): %v allocs, want 0", h, allocs)
		}
	}
}

func BenchmarkNormalizeHost(b *testing.B) {
	for _, bc := range []struct{ name, host string }{
		{"normalized", "www.some-domain.example.com"},
		{"ipv4", "192.0.2.1"},
		{"uppercase", "WWW.Some-Domain.Example.COM."},
		{"idn", "www.bücher.example"},
		{"ipv6", "[2001:db8::1]"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := NormalizeHost(bc.host); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func FuzzNormalizeHost(f *testing.F) {
	for _, s := range []string{"example.com", "WWW.Bücher.Example.", "::ffff:10.0.0.1", "[::1]", "a..b", "_x.y", "1.2.3.4"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		h, err := NormalizeHost(s)
		if err != nil {
			return
		}
		again, err := NormalizeHost(h)
		if err != nil || again != h {
			t.Fatalf("NormalizeHost(%q) = %q, then %q, %v: not idempotent", s, h, again, err)
		}
	})
}

// TestNormalizeHostInetAton refuses every name that glibc's inet_aton reads
// as an IPv4 address (issue 9 item 3): with the cgo resolver such a name
// would reach 127.0.0.2 while the rules saw a name.
func TestNormalizeHostInetAton(t *testing.T) {
	for _, h := range []string{
		"0x7f000002", "0X7F000002", "127.0.0.0x2", "0x7f.0x2", "0x7f.1", "0177.1", "0177.0.0.1", "127.1", "127.0.1",
		"2130706434", "0x7f000002.", "127.0x0.1", "0x7f.0.0.0x2", "0xffffffffff", "1.0x1", "0x0",
	} {
		if got, err := NormalizeHost(h); !errors.Is(err, ErrInvalidHost) {
			t.Errorf("NormalizeHost(%q) = %q, %v; want ErrInvalidHost", h, got, err)
		}
	}
	// Names that look numeric but that inet_aton refuses stay names.
	for _, h := range []string{"0x", "0.0x", "0x.example", "1e1", "0x7f.example", "a.0x7f", "127.1.example", "1password.com", "0xg", "1.2.3.4.0x5", "3com.com"} {
		if got, err := NormalizeHost(h); err != nil || got != h {
			t.Errorf("NormalizeHost(%q) = %q, %v; want it unchanged", h, got, err)
		}
	}
}
