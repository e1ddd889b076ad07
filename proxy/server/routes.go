package server

import (
	"fmt"
	"net/url"
	"os"

	"github.com/sluiceproxy/sluice/proxy/dial"
	"github.com/sluiceproxy/sluice/rules"
)

// newRouter builds the shared dialer from the config's upstreams. A route
// that cannot be built is an error: Sluice never falls back to direct.
func newRouter(cfg *rules.Config) (*dial.Router, error) { return newCountedRouter(cfg, nil) }

// newCountedRouter is newRouter with a hook that counts failovers (nil: none).
func newCountedRouter(cfg *rules.Config, onFailover func(route string)) (*dial.Router, error) {
	dc := dial.Config{
		OnFailover: onFailover,
		Routes:     map[string]dial.RouteSpec{},
		Default:    cfg.Upstream,
		Direct:     &dial.Direct{Timeout: cfg.Timeouts.Dial, Hosts: cfg.Hosts},
		HopTimeout: cfg.Timeouts.Dial,
	}
	for name, u := range cfg.Upstreams {
		spec := dial.RouteSpec{Failover: u.Failover}
		for _, raw := range u.Chain {
			pu, err := url.Parse(raw)
			if err != nil {
				return nil, fmt.Errorf("server: upstream %s: %w", name, err)
			}
			spec.Chain = append(spec.Chain, pu)
		}
		if u.TLSCA != "" {
			pem, err := os.ReadFile(u.TLSCA)
			if err != nil {
				return nil, &rules.ParseError{File: configName(cfg), Line: u.TLSCALine,
					Err: fmt.Errorf("upstream %q: tls_ca: %w", name, err)}
			}
			spec.TLSCA = pem
		}
		dc.Routes[name] = spec
	}
	return dial.NewRouter(dc)
}

// DescribeRoute tells, for `sluice check`, how traffic on route leaves:
// "direct", or the upstream's name and its hops (passwords redacted).
// Route "" is the config's default route.
func DescribeRoute(cfg *rules.Config, route string) (string, error) {
	r, err := newRouter(cfg)
	if err != nil {
		return "", err
	}
	return r.Describe(route), nil
}
