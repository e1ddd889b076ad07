package server

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"

	"github.com/sluiceproxy/sluice/proxy/accesslog"
	"github.com/sluiceproxy/sluice/proxy/pac"
	"github.com/sluiceproxy/sluice/rules"
)

// access writes one access record to the access log.
func (s *Server) access(r *accesslog.Record) { s.alog.Write(r) }

// reopenAccessLog reopens the access log file (SIGUSR1, after logrotate
// moved it away). On error the old file keeps being written.
func (s *Server) reopenAccessLog() {
	if err := s.alog.Reopen(); err != nil {
		s.log.Error("SIGUSR1: cannot reopen the access log; still writing the old file", "err", err)
		return
	}
	if p := s.alog.Path(); p != "" {
		s.log.Info("SIGUSR1: access log reopened", "file", p)
	}
}

// PACConfig returns the pac package's view of a config's `pac:`.
func PACConfig(c rules.PAC) pac.Config {
	return pac.Config{Proxies: c.Proxies, Bypass: c.Bypass, FallbackDirect: c.FallbackDirect}
}

// PACFile returns the PAC file of cfg as `sluice pac` prints it: for the
// `pac: proxies:` when set, else for host (when not empty) or the host of
// cfg's first listen address (this machine's name when that is every
// interface), at that listener's port.
func PACFile(cfg *rules.Config, host string) (string, error) {
	c := PACConfig(cfg.PAC)
	if len(c.Proxies) > 0 {
		return c.File(), nil
	}
	if len(cfg.Listen) == 0 {
		return "", fmt.Errorf("server: the config has no listen address")
	}
	h, port, err := net.SplitHostPort(cfg.Listen[0])
	if err != nil {
		return "", fmt.Errorf("server: listen %q: %w", cfg.Listen[0], err)
	}
	if host == "" {
		host = h
		if a, err := netip.ParseAddr(h); h == "" || err == nil && a.IsUnspecified() {
			if host, err = os.Hostname(); err != nil {
				return "", fmt.Errorf("server: the proxy listens on every interface, and this machine's name is unknown (%v): pass --host", err)
			}
		}
	}
	addr := net.JoinHostPort(host, port)
	if err := pac.CheckProxy(addr); err != nil {
		return "", fmt.Errorf("server: %v", err)
	}
	return c.File(addr), nil
}

// pacServer serves one state's PAC file.
type pacServer struct {
	s   *Server
	cfg pac.Config
}

func (s *Server) pacHandler(c rules.PAC) pacServer {
	return pacServer{s: s, cfg: PACConfig(c)}
}

// serveProxyPort serves GET /proxy.pac and /wpad.dat sent to a proxy
// port (the proxy front end's Local hook): the proxy is the address the
// client reached. The listener already checked `clients`.
func (p pacServer) serveProxyPort(w http.ResponseWriter, r *http.Request) bool {
	return p.cfg.Handler(w, r)
}

// serveAdmin serves the PAC file on the admin listener: the proxy is the
// host the client reached at the first proxy listener's port.
func (p pacServer) serveAdmin(w http.ResponseWriter, r *http.Request) {
	port := ""
	if p.s.addr != nil {
		if ap, err := netip.ParseAddrPort(p.s.addr.String()); err == nil {
			port = strconv.Itoa(int(ap.Port()))
		}
	}
	r2 := r.Clone(r.Context())
	if host, _, err := net.SplitHostPort(r.Host); err == nil {
		r2.Host = host
	}
	if port != "" {
		if r2.Host == "" {
			r2.Host = "127.0.0.1"
		}
		r2.Host = net.JoinHostPort(trimBrackets(r2.Host), port)
	}
	if !p.cfg.Handler(w, r2) {
		http.NotFound(w, r)
	}
}

func trimBrackets(h string) string {
	if len(h) > 1 && h[0] == '[' && h[len(h)-1] == ']' {
		return h[1 : len(h)-1]
	}
	return h
}
