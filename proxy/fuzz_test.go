package proxy

import (
	"encoding/base64"
	"strings"
	"testing"
)

func TestParseBasic(t *testing.T) {
	enc := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	for _, tc := range []struct {
		in, user, pass string
		ok             bool
	}{
		{"Basic " + enc("alice:pw"), "alice", "pw", true},
		{"basic " + enc("alice:pw:with:colons"), "alice", "pw:with:colons", true},
		{"  Basic   " + enc("bob:") + " ", "bob", "", true},
		{"Basic " + enc("nocolon"), "", "", false},
		{"Basic " + enc(":pw"), "", "", false},
		{"Bearer " + enc("alice:pw"), "", "", false},
		{"Basic !!!", "", "", false},
		{"", "", "", false},
		{"Basic", "", "", false},
	} {
		user, pass, ok := parseBasic(tc.in)
		if user != tc.user || pass != tc.pass || ok != tc.ok {
			t.Errorf("parseBasic(%q) = %q, %q, %v; want %q, %q, %v", tc.in, user, pass, ok, tc.user, tc.pass, tc.ok)
		}
	}
}

func FuzzParseBasic(f *testing.F) {
	for _, s := range []string{"Basic YWxpY2U6cHc=", "basic Og==", "Basic", "Digest x", "Basic ====", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		user, pass, ok := parseBasic(s)
		if !ok && (user != "" || pass != "") {
			t.Errorf("failed parse returned credentials")
		}
		if ok && (user == "" || strings.Contains(user, ":")) {
			t.Errorf("bad user %q", user)
		}
	})
}

func TestParseTarget(t *testing.T) {
	var s Server
	for _, tc := range []struct {
		in      string
		defPort uint16
		want    string // addr(), or "" for an error
	}{
		{"example.com:443", 0, "example.com:443"},
		{"EXAMPLE.com.:443", 0, "example.com:443"},
		{"example.com", 0, ""},
		{"example.com", 80, "example.com:80"},
		{"[::1]:8080", 0, "[::1]:8080"},
		{"[::1]", 443, "[::1]:443"},
		{"[::ffff:10.0.0.1]:80", 0, "10.0.0.1:80"},
		{"10.0.0.1:0", 0, ""},
		{"10.0.0.1:65536", 0, ""},
		{"10.0.0.1:http", 0, ""},
		{":80", 0, ""},
		{"a..b:80", 0, ""},
		{"bad host:80", 0, ""},
		{"[fe80::1%eth0]:80", 0, ""},
		{"::1", 80, ""},
	} {
		got, err := s.parseTarget(tc.in, tc.defPort)
		if tc.want == "" {
			if err == nil {
				t.Errorf("parseTarget(%q) = %q, want an error", tc.in, got.addr())
			}
			continue
		}
		if err != nil || got.addr() != tc.want {
			t.Errorf("parseTarget(%q) = %q, %v; want %q", tc.in, got.addr(), err, tc.want)
		}
	}
}

func FuzzParseTarget(f *testing.F) {
	for _, s := range []string{"example.com:443", "[::1]:80", "[::ffff:1.2.3.4]:1", "a.b.", ":0", "x:65535", "[]:1"} {
		f.Add(s)
	}
	var s Server
	f.Fuzz(func(t *testing.T, in string) {
		tg, err := s.parseTarget(in, 0)
		if err != nil {
			return
		}
		if tg.port == 0 || tg.host == "" {
			t.Fatalf("parseTarget(%q) = %+v", in, tg)
		}
		// Normal form is stable.
		again, err := s.parseTarget(tg.addr(), 0)
		if err != nil || again != tg {
			t.Fatalf("parseTarget(%q) = %+v, reparsed %+v, %v", in, tg, again, err)
		}
	})
}
