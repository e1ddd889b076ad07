package rules

import (
	"errors"
	"net/netip"
	"slices"
	"testing"
)

func TestParseAdmin(t *testing.T) {
	for _, tt := range []struct {
		name, src string
		addr      string
		clients   []netip.Prefix
	}{
		{"off", "", "", nil},
		{"loopback", "admin: 127.0.0.1:9090\n", "127.0.0.1:9090", nil},
		{"loopback v6", "admin: \"[::1]:9090\"\n", "[::1]:9090", nil},
		{"localhost", "admin: localhost:9090\n", "localhost:9090", nil},
		{"any port", "admin: 127.0.0.1:0\n", "127.0.0.1:0", nil},
		{"lan with clients", "admin: 10.0.0.1:9090\nadmin_clients: [10.0.0.0/24, 10.1.2.3]\n", "10.0.0.1:9090",
			[]netip.Prefix{netip.MustParsePrefix("10.0.0.0/24"), netip.MustParsePrefix("10.1.2.3/32")}},
		{"every interface with clients", "admin_clients: 192.0.2.0/24\nadmin: \":9090\"\n", ":9090",
			[]netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse("sluice.yaml", []byte(tt.src+"default: allow\n"))
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Admin.Addr != tt.addr || !slices.Equal(cfg.Admin.Clients, tt.clients) {
				t.Errorf("Admin = %+v, want addr %q clients %v", cfg.Admin, tt.addr, tt.clients)
			}
		})
	}
}

func TestParseAdminErrors(t *testing.T) {
	for _, tt := range []struct{ name, src, want string }{
		{"lan without clients", "default: allow\nadmin: 10.0.0.1:9090\n",
			"sluice.yaml:2: admin: 10.0.0.1:9090 is not a loopback address: add `admin_clients: [YOUR/CIDR]` to say who may read the admin endpoints, or use 127.0.0.1"},
		{"every interface without clients", "admin: \":9090\"\n",
			"sluice.yaml:1: admin: :9090 is not a loopback address: add `admin_clients: [YOUR/CIDR]` to say who may read the admin endpoints, or use 127.0.0.1"},
		{"empty clients", "admin: 0.0.0.0:9090\nadmin_clients: []\n",
			"sluice.yaml:1: admin: 0.0.0.0:9090 is not a loopback address: add `admin_clients: [YOUR/CIDR]` to say who may read the admin endpoints, or use 127.0.0.1"},
		{"no port", "admin: 127.0.0.1\n", `sluice.yaml:1: admin: invalid address "127.0.0.1" (want IP:port, such as 127.0.0.1:9090)`},
		{"bad port", "admin: 127.0.0.1:99999\n", `sluice.yaml:1: admin: invalid address "127.0.0.1:99999" (want IP:port, such as 127.0.0.1:9090)`},
		{"host name", "admin: admin.example:9090\n", `sluice.yaml:1: admin: invalid address "admin.example:9090" (want IP:port, such as 127.0.0.1:9090)`},
		{"list", "admin: [127.0.0.1:9090]\n", `sluice.yaml:1: admin: must be a string`},
		{"bad client", "admin: 10.0.0.1:9090\nadmin_clients: [10.0.0.0/8, nope]\n", `sluice.yaml:2: admin_clients: invalid IP address "nope"`},
		{"clients without admin", "default: allow\nadmin_clients: [10.0.0.0/8]\n",
			"sluice.yaml:2: admin_clients: set, but no `admin:` address; add `admin: 127.0.0.1:9090` or remove admin_clients"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse("sluice.yaml", []byte(tt.src))
			if err == nil {
				t.Fatalf("no error; admin %+v", cfg.Admin)
			}
			var pe *ParseError
			if !errors.As(err, &pe) || pe.File != "sluice.yaml" {
				t.Errorf("error %v (%T) is not a *ParseError for sluice.yaml", err, err)
			}
			if err.Error() != tt.want {
				t.Errorf("error\n got %s\nwant %s", err, tt.want)
			}
		})
	}
}

func TestIsLoopbackAddr(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:9090": true, "127.3.4.5:1": true, "[::1]:9090": true, "localhost:9090": true,
		":9090": false, "0.0.0.0:9090": false, "[::]:9090": false, "10.0.0.1:9090": false, "nonsense": false,
	} {
		if got := IsLoopbackAddr(addr); got != want {
			t.Errorf("IsLoopbackAddr(%q) = %v, want %v", addr, got, want)
		}
	}
}
