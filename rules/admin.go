package rules

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"

	"go.yaml.in/yaml/v3"
)

// Admin configures the admin listener: health, readiness and profiling
// endpoints for operators, on an address of its own. The zero Admin means
// no admin listener.
type Admin struct {
	// Addr is the admin listener's host:port. Empty: no admin listener.
	Addr string
	// Clients restricts who may use the admin endpoints. Required when Addr
	// is not a loopback address; empty with a loopback Addr means anybody
	// who reaches it (local users only).
	Clients []netip.Prefix
	// Line is the config line of the `admin` key, for errors found later.
	Line int

	clientsLine int // the `admin_clients` key's line
}

// IsLoopbackAddr reports whether the host of a host:port listen address is
// a loopback address or "localhost". An empty host (every interface) is not.
func IsLoopbackAddr(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// parseAdmin reads `admin: HOST:PORT`.
func (p *cfgParser) parseAdmin(n *yaml.Node, ctx string) error {
	s, err := p.str(n, ctx)
	if err != nil {
		return err
	}
	host, port, err := net.SplitHostPort(s)
	if err == nil {
		var pn int
		if pn, err = strconv.Atoi(port); err == nil && (pn < 0 || pn > 65535) {
			err = strconv.ErrRange
		}
	}
	if err == nil && host != "" && host != "localhost" {
		if a, perr := netip.ParseAddr(host); perr != nil || a.Zone() != "" {
			err = perr
			if err == nil {
				err = strconv.ErrSyntax
			}
		}
	}
	if err != nil {
		return p.errf(n, "%sinvalid address %q (want IP:port, such as 127.0.0.1:9090)", ctx, s)
	}
	p.cfg.Admin.Addr = s
	p.cfg.Admin.Line = n.Line
	return nil
}

// parseAdminClients reads `admin_clients: [CIDR, ...]`.
func (p *cfgParser) parseAdminClients(n *yaml.Node, ctx string) (err error) {
	p.cfg.Admin.clientsLine = n.Line
	p.cfg.Admin.Clients, err = p.prefixes(n, ctx)
	return err
}

// checkAdmin refuses an admin listener beyond loopback that nobody
// restricted: its profiles and, later, its metrics are not for everyone.
func (p *cfgParser) checkAdmin() error {
	a := p.cfg.Admin
	if a.Addr == "" {
		if len(a.Clients) > 0 {
			return &ParseError{File: p.name, Line: a.clientsLine, Err: fmt.Errorf("admin_clients: set, but no `admin:` address; add `admin: 127.0.0.1:9090` or remove admin_clients")}
		}
		return nil
	}
	if IsLoopbackAddr(a.Addr) || len(a.Clients) > 0 {
		return nil
	}
	return &ParseError{File: p.name, Line: a.Line, Err: fmt.Errorf("admin: %s is not a loopback address: add `admin_clients: [YOUR/CIDR]` to say who may read the admin endpoints, or use 127.0.0.1", a.Addr)}
}
