package server

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/sluiceproxy/sluice/proxy/pac"
	"github.com/sluiceproxy/sluice/rules"
)

// adminServer is the admin listener (`admin: 127.0.0.1:9090`): operators'
// endpoints on an address of their own, never on a proxy port.
//
//	/              the status page (status.go)
//	/metrics       Prometheus metrics (metrics.go)
//	/healthz       200 "ok" while the process serves
//	/readyz        200 once the rules are loaded and the proxy listeners
//	               are open; 503 before that and once shutdown has begun
//	/debug/pprof/  net/http/pprof: goroutines, heap, CPU profiles
//	/proxy.pac     the PAC file (also /wpad.dat), for the proxy port
//
// A request that this process itself carries to the admin listener (a
// proxy client asking for http://127.0.0.1:9090/, or a tunnel to it) gets
// 403: the endpoints are never reachable through the proxy port.
//
// Its address and `admin_clients` are read at start, like `listen`: a
// reload does not move or reopen it. Requests from addresses outside
// `admin_clients` (when set) get 403 and nothing else.
type adminServer struct {
	s       *Server
	cfg     rules.Admin
	self    func(peer, local netip.AddrPort) (bool, error) // fromSelf
	ln      net.Listener
	hs      *http.Server
	mux     *http.ServeMux
	ready   atomic.Bool   // the proxy listeners are open and serving
	stopped chan struct{} // closed when Serve has returned
}

// startAdmin opens the admin listener of cfg and serves it. It returns nil
// and no error when cfg configures none.
func (s *Server) startAdmin(cfg rules.Admin) (*adminServer, error) {
	return s.openAdmin(cfg, fromSelf)
}

// openAdmin is startAdmin with the test that tells the proxy's own
// connections (tests of this package are their own clients).
func (s *Server) openAdmin(cfg rules.Admin, self func(peer, local netip.AddrPort) (bool, error)) (*adminServer, error) {
	if cfg.Addr == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, listenError("admin", cfg.Addr, err)
	}
	a := &adminServer{s: s, cfg: cfg, self: self, ln: ln, mux: http.NewServeMux(), stopped: make(chan struct{})}
	a.mux.HandleFunc("GET /healthz", a.healthz)
	a.mux.HandleFunc("GET /readyz", a.readyz)
	if s.m != nil {
		a.mux.Handle("GET /metrics", s.m.handler())
		a.mux.HandleFunc("GET /{$}", a.status)
	}
	for _, path := range pac.Paths {
		a.mux.HandleFunc(path, a.pac)
	}
	a.mux.HandleFunc("/debug/pprof/", pprof.Index)
	a.mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	a.mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	a.mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	a.mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	a.hs = &http.Server{
		Handler:           a,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	go func() {
		defer close(a.stopped)
		if err := a.hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("admin listener failed", "addr", ln.Addr().String(), "err", err)
		}
	}()
	// Not "listening on": that phrase announces the proxy's own listeners.
	s.log.Info("admin endpoints at http://"+ln.Addr().String()+"/", "admin", ln.Addr().String())
	return a, nil
}

// ServeHTTP refuses requests that the proxy itself carries (a proxy
// client asking for http://ADMIN/ or tunnelling to it), checks
// `admin_clients` and hands the request to the mux.
func (a *adminServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	peer, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		http.Error(w, "forbidden", http.StatusForbidden)
		return
	}
	var local netip.AddrPort
	if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		local, _ = netip.ParseAddrPort(la.String())
	}
	if self, err := a.self(peer, local); err != nil || self {
		// Fail closed: a request whose origin cannot be told is refused too.
		log := a.s.log.With("client", r.RemoteAddr, "path", r.URL.Path)
		if err != nil {
			log = log.With("err", err)
		}
		log.Warn("admin request carried by the proxy itself; refused")
		http.Error(w, "forbidden: the admin endpoints are not served through the proxy", http.StatusForbidden)
		return
	}
	if len(a.cfg.Clients) > 0 && !allowedClient(a.cfg.Clients, peer.Addr().Unmap()) {
		a.s.log.Warn("admin request from outside `admin_clients`; refused", "client", r.RemoteAddr, "path", r.URL.Path)
		http.Error(w, "forbidden", http.StatusForbidden)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	a.mux.ServeHTTP(w, r)
}

// pac serves the running config's PAC file, pointing at the proxy port.
func (a *adminServer) pac(w http.ResponseWriter, r *http.Request) {
	st := a.s.state.Load()
	a.s.pacHandler(st.cfg.PAC).serveAdmin(w, r)
}

func (a *adminServer) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintln(w, "ok")
}

func (a *adminServer) readyz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	st := a.s.state.Load()
	switch {
	case st == nil || st.engine == nil:
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, "not ready: no rules loaded")
	case !a.ready.Load():
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, "not ready: proxy listeners are not open")
	default:
		fmt.Fprintf(w, "ready: %d rules loaded %s\n", st.engine.Rules(), st.loaded.UTC().Format(time.RFC3339))
	}
}

// setReady records whether the proxy listeners serve. It is safe on a nil
// adminServer (no admin listener configured).
func (a *adminServer) setReady(ok bool) {
	if a != nil {
		a.ready.Store(ok)
	}
}

// close stops the admin listener and its connections and waits for its
// server to return. It is safe on a nil adminServer.
func (a *adminServer) close() {
	if a == nil {
		return
	}
	a.ready.Store(false)
	_ = a.hs.Close()
	<-a.stopped
}
