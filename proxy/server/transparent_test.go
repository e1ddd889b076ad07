package server

import (
	"strings"
	"testing"

	"github.com/sluiceproxy/sluice/rules"
)

// TestCheckOpenTransparent: a transparent listener beyond loopback needs
// `clients`; `users` does not restrict it, since it asks for no password.
func TestCheckOpenTransparent(t *testing.T) {
	for _, tc := range []struct {
		src  string
		open bool // refused as open
	}{
		{"default: allow\ntransparent: {listen: [\"192.0.2.1:3129\"]}\n", true},
		{"default: allow\nusers: users.htpasswd\ntransparent: {listen: [\"192.0.2.1:3129\"]}\n", true},
		{"default: allow\ntransparent: {listen: [\":3129\"]}\n", true},
		{"default: allow\nclients: [192.0.2.0/24]\ntransparent: {listen: [\"192.0.2.1:3129\"]}\n", false},
		{"default: allow\ntransparent: {listen: [\"127.0.0.1:3129\"]}\n", false},
		{"default: allow\nusers: users.htpasswd\nlisten: [\"192.0.2.1:3128\"]\n", false},
	} {
		cfg, err := rules.Parse("sluice.yaml", []byte(tc.src))
		if err != nil {
			t.Fatal(err)
		}
		err = checkOpen(cfg, false)
		if (err != nil) != tc.open || err != nil && !strings.Contains(err.Error(), "transparent") {
			t.Errorf("%q: %v; want refused %v", tc.src, err, tc.open)
		}
		if err := checkOpen(cfg, true); err != nil {
			t.Errorf("%q with --allow-open: %v", tc.src, err)
		}
	}
}
