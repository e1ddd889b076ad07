package server

import (
	"cmp"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"

	"github.com/sluiceproxy/sluice/proxy"
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
		if u.Isolate != "" {
			iso, err := dial.ParseIsolation(u.Isolate)
			if err != nil {
				return nil, &rules.ParseError{File: configName(cfg), Line: u.Line, Err: fmt.Errorf("upstream %q: %w", name, err)}
			}
			spec.Isolate = iso
			if iso != dial.IsolateNone && dc.IsolationKey == nil {
				if dc.IsolationKey, err = loadIsolationKey(cfg); err != nil {
					return nil, &rules.ParseError{File: configName(cfg), Line: u.Line, Err: fmt.Errorf("upstream %q: isolate: %w", name, err)}
				}
			}
		}
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

// IsolationKeyFile is the name of the circuit isolation key in cache_dir.
const IsolationKeyFile = "isolation.key"

// loadIsolationKey reads, or creates once, the isolation key beside the
// list cache, so that identities survive restarts.
func loadIsolationKey(cfg *rules.Config) ([]byte, error) {
	if cfg.CacheDir == "" {
		return nil, fmt.Errorf("needs cache_dir (where the isolation key is kept)")
	}
	return dial.LoadIsolationKey(filepath.Join(cfg.CacheDir, IsolationKeyFile))
}

// IsolationIdentity tells, for `sluice check`, the isolation mode of route
// and the user name its last hop would send for client and user dialing
// target. It creates the key as the server would. Mode "none" means the
// route does not isolate.
func IsolationIdentity(cfg *rules.Config, route string, client netip.Addr, user, target string) (mode, name string, err error) {
	r, err := newRouter(cfg)
	if err != nil {
		return "", "", err
	}
	iso, name := r.Isolation(route, dial.Identity{Client: client, User: user}, target)
	return iso.String(), name, nil
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

// blockPage is what the proxy front end shows blocked clients: Sluice's
// version only with block_page.show_version.
func (s *Server) blockPage(cfg *rules.Config) proxy.BlockPage {
	bp := proxy.BlockPage{Template: cfg.BlockPage.Template, Contact: cfg.BlockPage.Contact, ShowRule: cfg.BlockPage.ShowRule}
	if cfg.BlockPage.ShowVersion {
		bp.Version = cmp.Or(s.opts.Version, "dev")
	}
	return bp
}
