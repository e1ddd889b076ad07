package rules

import (
	"errors"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func TestParseAccessLogAndPAC(t *testing.T) {
	cfg, err := Parse("/etc/sluice/sluice.yaml", []byte(`
default: allow
access_log: log/access.log
log_format: squid
pac:
  proxies: [gw1.school.example:3128, "[2001:db8::1]:3128", 192.0.2.7:8080]
  bypass: [intranet.school.example, "*.corp.example", .lan, 10.0.0.0/8, "fd00::/8", 192.0.2.9]
  fallback_direct: true
`))
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join("/etc/sluice", "log/access.log"); cfg.AccessLog != want {
		t.Errorf("AccessLog = %q, want %q (relative to the config)", cfg.AccessLog, want)
	}
	if cfg.LogFormat != LogFormatSquid {
		t.Errorf("LogFormat = %q", cfg.LogFormat)
	}
	if !slices.Equal(cfg.PAC.Proxies, []string{"gw1.school.example:3128", "[2001:db8::1]:3128", "192.0.2.7:8080"}) ||
		len(cfg.PAC.Bypass) != 6 || !cfg.PAC.FallbackDirect {
		t.Errorf("PAC = %+v", cfg.PAC)
	}
	cfg, err = Parse("sluice.yaml", []byte("default: allow\naccess_log: stderr\n"))
	if err != nil || cfg.AccessLog != "stderr" || cfg.LogFormat != "" {
		t.Errorf("stderr: %+v %v", cfg, err)
	}
}

// TestParseAccessLogFlush: the buffer of an access log file is set in
// time, or off; unset is zero (the log's default, 1s).
func TestParseAccessLogFlush(t *testing.T) {
	for src, want := range map[string]time.Duration{
		"":                        0,
		"access_log_flush: 250ms": 250 * time.Millisecond,
		"access_log_flush: 1m":    time.Minute,
		"access_log_flush: off":   AccessLogUnbuffered,
		`access_log_flush: "off"`: AccessLogUnbuffered,
	} {
		cfg, err := Parse("sluice.yaml", []byte("default: allow\naccess_log: a.log\n"+src+"\n"))
		if err != nil || cfg.AccessLogFlush != want {
			t.Errorf("%q: AccessLogFlush = %v, %v; want %v", src, cfg.AccessLogFlush, err, want)
		}
	}
}

func TestParseAccessLogAndPACErrors(t *testing.T) {
	for _, tt := range []struct{ name, src, want string }{
		{"format", "log_format: apache\n", `sluice.yaml:1: log_format: must be json or squid, not "apache"`},
		{"empty path", "access_log: \"\"\n", `sluice.yaml:1: access_log: want stderr or a file path, such as /var/log/sluice/access.log`},
		{"path list", "access_log: [a, b]\n", `sluice.yaml:1: access_log: must be a string`},
		{"flush zero", "access_log_flush: 0s\n", `sluice.yaml:1: access_log_flush: want a positive duration such as 1s or 200ms, or off (each line written at once), not "0s"`},
		{"flush word", "default: allow\naccess_log_flush: never\n", `sluice.yaml:2: access_log_flush: want a positive duration such as 1s or 200ms, or off (each line written at once), not "never"`},
		{"flush bool", "access_log_flush: false\n", `sluice.yaml:1: access_log_flush: want a positive duration such as 1s or 200ms, or off (each line written at once), not "false"`},
		{"proxy without port", "pac:\n  proxies: [gw1.school.example]\n",
			`sluice.yaml:2: pac: proxies: invalid proxy "gw1.school.example" (want host:port, such as gw1.school.example:3128)`},
		{"proxy script", "pac:\n  proxies: ['a\");alert(1);(\":3128']\n",
			`sluice.yaml:2: pac: proxies: invalid proxy "a\");alert(1);(\":3128" (want host:port, such as gw1.school.example:3128)`},
		{"proxy port 0", "pac:\n  proxies: [gw:0]\n",
			`sluice.yaml:2: pac: proxies: invalid proxy "gw:0" (want host:port, such as gw1.school.example:3128)`},
		{"bypass script", "pac:\n  bypass:\n    - ok.example\n    - 'x\" || true || \"'\n",
			`sluice.yaml:4: pac: bypass: invalid entry "x\" || true || \"" (want a host name such as intranet.school.example, *.school.example, an IP address or a CIDR network)`},
		{"fallback", "pac: {fallback_direct: yes please}\n", `sluice.yaml:1: pac: fallback_direct: must be true or false`},
		{"unknown", "pac: {proxy: gw:3128}\n", `sluice.yaml:1: pac: unknown key "proxy" (want proxies, bypass, fallback_direct)`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("sluice.yaml", []byte(tt.src))
			var pe *ParseError
			if !errors.As(err, &pe) || err.Error() != tt.want {
				t.Errorf("got %v, want %s", err, tt.want)
			}
		})
	}
}
