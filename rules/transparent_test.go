package rules

import (
	"errors"
	"slices"
	"testing"
)

func TestParseTransparent(t *testing.T) {
	for _, tc := range []struct {
		src     string
		listen  []string
		verify  bool
		unnamed Action
	}{
		{"default: allow\n", nil, true, Block},
		{"default: allow\ntransparent:\n  listen: [\"192.0.2.1:3129\", \"[2001:db8::1]:3129\"]\n", []string{"192.0.2.1:3129", "[2001:db8::1]:3129"}, true, Block},
		{"default: allow\ntransparent: {listen: [\":3129\"], verify_host: false, unnamed: allow}\n", []string{":3129"}, false, Allow},
		{"default: allow\ntransparent: {verify_host: true, unnamed: block}\n", nil, true, Block},
	} {
		cfg, err := Parse("sluice.yaml", []byte(tc.src))
		if err != nil {
			t.Fatalf("%q: %v", tc.src, err)
		}
		tr := cfg.Transparent
		if !slices.Equal(tr.Listen, tc.listen) || tr.VerifyHost != tc.verify || tr.Unnamed != tc.unnamed {
			t.Errorf("%q: %+v; want listen %q, verify_host %v, unnamed %q", tc.src, tr, tc.listen, tc.verify, tc.unnamed)
		}
	}
}

func TestParseTransparentErrors(t *testing.T) {
	for _, tc := range []struct{ src, want string }{
		{"transparent: [\":3129\"]\n", `sluice.yaml:1: transparent: must be a mapping`},
		{"transparent:\n  listen: [\"192.0.2.1\"]\n", `sluice.yaml:2: transparent: listen: invalid address "192.0.2.1" (want host:port, such as 127.0.0.1:3128)`},
		{"transparent:\n  listen: [\"192.0.2.1:70000\"]\n", `sluice.yaml:2: transparent: listen: invalid address "192.0.2.1:70000" (want host:port, such as 127.0.0.1:3128)`},
		{"transparent:\n  verify_host: yes please\n", `sluice.yaml:2: transparent: verify_host: must be true or false`},
		{"transparent:\n\n  unnamed: deny\n", `sluice.yaml:3: transparent: unnamed: must be allow or block, not "deny"`},
		{"transparent:\n  port: 3129\n", `sluice.yaml:2: transparent: unknown key "port" (want listen, verify_host, unnamed)`},
	} {
		cfg, err := Parse("sluice.yaml", []byte(tc.src))
		if err == nil {
			t.Errorf("%q: no error; config %+v", tc.src, cfg.Transparent)
			continue
		}
		var pe *ParseError
		if !errors.As(err, &pe) || err.Error() != tc.want {
			t.Errorf("%q: error %q (%T); want %q", tc.src, err, err, tc.want)
		}
	}
}
