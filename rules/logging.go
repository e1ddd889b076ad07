package rules

import (
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Values of `access_log` and `log_format`.
const (
	AccessLogStderr = "stderr"
	LogFormatJSON   = "json"
	LogFormatSquid  = "squid"
)

// AccessLogUnbuffered is the AccessLogFlush of `access_log_flush: off`:
// every access line is written to the file at once.
const AccessLogUnbuffered time.Duration = -1

// PAC configures the proxy auto-config file served as /proxy.pac and
// /wpad.dat. The zero PAC sends browsers to the address they fetched the
// file from, HTTP first and SOCKS5 second, loopback DIRECT, and never
// DIRECT otherwise.
type PAC struct {
	// Proxies are the host:port addresses of Sluice replicas, tried in
	// order by browsers. Empty: the address the client reached.
	Proxies []string
	// Bypass are host names (a name covers its subdomains), "*.name",
	// IP addresses and CIDR networks that browsers reach DIRECT.
	Bypass []string
	// FallbackDirect lets browsers go DIRECT when no proxy answers.
	FallbackDirect bool
}

// parseAccessLog reads `access_log: stderr | PATH`.
func (p *cfgParser) parseAccessLog(n *yaml.Node, ctx string) error {
	s, err := p.str(n, ctx)
	if err != nil {
		return err
	}
	switch {
	case s == AccessLogStderr:
		p.cfg.AccessLog = s
	case s == "" || strings.ContainsRune(s, 0):
		return p.errf(n, "%swant stderr or a file path, such as /var/log/sluice/access.log", ctx)
	default:
		p.cfg.AccessLog = p.path(s)
	}
	return nil
}

// parseAccessLogFlush reads `access_log_flush: DURATION | off`.
func (p *cfgParser) parseAccessLogFlush(n *yaml.Node, ctx string) error {
	s, err := p.str(n, ctx)
	if err != nil {
		return err
	}
	if s == "off" {
		p.cfg.AccessLogFlush = AccessLogUnbuffered
		return nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return p.errf(n, "%swant a positive duration such as 1s or 200ms, or off (each line written at once), not %q", ctx, s)
	}
	p.cfg.AccessLogFlush = d
	return nil
}

// parseLogFormat reads `log_format: json | squid`.
func (p *cfgParser) parseLogFormat(n *yaml.Node, ctx string) error {
	s, err := p.str(n, ctx)
	if err != nil {
		return err
	}
	switch s {
	case LogFormatJSON, LogFormatSquid:
		p.cfg.LogFormat = s
		return nil
	}
	return p.errf(n, "%smust be json or squid, not %q", ctx, s)
}

// parsePAC reads `pac: {proxies: [...], bypass: [...], fallback_direct: BOOL}`.
func (p *cfgParser) parsePAC(n *yaml.Node) error {
	kvs, err := p.pairs(n, "pac: ")
	if err != nil {
		return err
	}
	pac := &p.cfg.PAC
	for _, kv := range kvs {
		ctx := "pac: " + kv.key.Value + ": "
		switch kv.key.Value {
		case "proxies":
			vals, items, err := p.strs(kv.val, ctx)
			if err != nil {
				return err
			}
			for i, v := range vals {
				if !pacProxy(v) {
					return p.errf(items[i], "%sinvalid proxy %q (want host:port, such as gw1.school.example:3128)", ctx, v)
				}
			}
			pac.Proxies = vals
		case "bypass":
			vals, items, err := p.strs(kv.val, ctx)
			if err != nil {
				return err
			}
			for i, v := range vals {
				if !pacBypass(v) {
					return p.errf(items[i], "%sinvalid entry %q (want a host name such as intranet.school.example, *.school.example, an IP address or a CIDR network)", ctx, v)
				}
			}
			pac.Bypass = vals
		case "fallback_direct":
			if pac.FallbackDirect, err = p.boolean(kv.val, ctx); err != nil {
				return err
			}
		default:
			return p.errf(kv.key, "pac: unknown key %q (want proxies, bypass, fallback_direct)", kv.key.Value)
		}
	}
	return nil
}

// pacProxy accepts host:port with a host name or an IP address (no zone)
// and a port from 1 to 65535.
func pacProxy(s string) bool {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return false
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return false
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return a.Zone() == ""
	}
	h, err := NormalizeHost(host)
	return err == nil && h == strings.ToLower(host)
}

// pacBypass accepts a host name, "*.name", ".name", an IP address (no
// zone) or a CIDR network.
func pacBypass(s string) bool {
	if _, err := netip.ParsePrefix(s); err == nil {
		return true
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Zone() == ""
	}
	name := strings.TrimPrefix(strings.TrimPrefix(s, "*"), ".")
	h, err := NormalizeHost(name)
	return err == nil && h == strings.ToLower(name)
}
