package server

import (
	"cmp"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
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
// It never creates the isolation key (commands such as `sluice check` use
// it): without one, isolating routes get a throwaway key.
func newRouter(cfg *rules.Config) (*dial.Router, error) {
	r, _, err := buildRouter(cfg, nil, false)
	return r, err
}

// buildRouter builds the router, with a hook that counts failovers (nil:
// none). With create (the server), it makes the isolation key when a route
// isolates and there is none yet; without, such a route gets a throwaway
// key, and throwaway says so.
func buildRouter(cfg *rules.Config, onFailover func(route string), create bool) (r *dial.Router, throwaway bool, err error) {
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
				return nil, false, &rules.ParseError{File: configName(cfg), Line: u.Line, Err: fmt.Errorf("upstream %q: %w", name, err)}
			}
			spec.Isolate = iso
			if iso != dial.IsolateNone && dc.IsolationKey == nil {
				if dc.IsolationKey, throwaway, err = isolationKey(cfg, create); err != nil {
					return nil, false, &rules.ParseError{File: configName(cfg), Line: u.Line, Err: fmt.Errorf("upstream %q: isolate: %w", name, err)}
				}
			}
		}
		for _, raw := range u.Chain {
			pu, err := url.Parse(raw)
			if err != nil {
				return nil, false, fmt.Errorf("server: upstream %s: %w", name, err)
			}
			spec.Chain = append(spec.Chain, pu)
		}
		if u.TLSCA != "" {
			pem, err := os.ReadFile(u.TLSCA)
			if err != nil {
				return nil, false, &rules.ParseError{File: configName(cfg), Line: u.TLSCALine,
					Err: fmt.Errorf("upstream %q: tls_ca: %w", name, err)}
			}
			spec.TLSCA = pem
		}
		dc.Routes[name] = spec
	}
	r, err = dial.NewRouter(dc)
	return r, throwaway, err
}

// IsolationKeyFile is the name of the circuit isolation key in cache_dir.
const IsolationKeyFile = "isolation.key"

// isolationKey reads the isolation key beside the list cache, so that
// identities survive restarts. With create it makes the key when there is
// none; without, a missing key gives a throwaway one.
func isolationKey(cfg *rules.Config, create bool) (key []byte, throwaway bool, err error) {
	if cfg.CacheDir == "" {
		return nil, false, fmt.Errorf("needs cache_dir (where the isolation key is kept)")
	}
	path := filepath.Join(cfg.CacheDir, IsolationKeyFile)
	if create {
		key, err = dial.LoadIsolationKey(path)
		return key, false, err
	}
	key, err = dial.ReadIsolationKey(path)
	if errors.Is(err, fs.ErrNotExist) {
		key = make([]byte, dial.IsolationKeySize)
		rand.Read(key)
		return key, true, nil
	}
	return key, false, err
}

// IsolationIdentity tells, for `sluice check`, the isolation mode of route
// and the user name its last hop would send for client and user dialing
// target. It never creates the key: before the server has made it, name
// says so instead. Mode "none" means the route does not isolate.
func IsolationIdentity(cfg *rules.Config, route string, client netip.Addr, user, target string) (mode, name string, err error) {
	r, throwaway, err := buildRouter(cfg, nil, false)
	if err != nil {
		return "", "", err
	}
	iso, name := r.Isolation(route, dial.Identity{Client: client, User: user}, target)
	if throwaway && name != "" {
		name = "unknown until sluice serve creates " + filepath.Join(cfg.CacheDir, IsolationKeyFile)
	}
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
