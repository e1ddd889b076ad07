package test

import (
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"
)

// hostOrigin is an HTTP origin on one loopback address that counts the TCP
// connections it accepts and answers "<name> host=<Host header>".
type hostOrigin struct {
	name    string
	accepts atomic.Int64
}

// newHostOrigins listens on each of ips on one port (the same for all, so
// that a name mapped to any of them by `hosts:` reaches it on the
// request's port) and returns the port and the origins, by ip.
func newHostOrigins(t *testing.T, ips ...string) (string, map[string]*hostOrigin) {
	t.Helper()
	for try := 0; try < 20; try++ {
		out := map[string]*hostOrigin{}
		var lns []net.Listener
		port := "0"
		ok := true
		for _, ip := range ips {
			ln, err := net.Listen("tcp", net.JoinHostPort(ip, port))
			if err != nil {
				ok = false
				break
			}
			_, port, _ = net.SplitHostPort(ln.Addr().String())
			lns = append(lns, ln)
		}
		if !ok {
			for _, ln := range lns {
				ln.Close()
			}
			continue
		}
		for i, ln := range lns {
			o := &hostOrigin{name: ips[i]}
			out[ips[i]] = o
			srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprintf(w, "%s host=%s", o.name, r.Host)
			}), ReadHeaderTimeout: 10 * time.Second}
			go srv.Serve(countingListener{ln, &o.accepts})
			t.Cleanup(func() { srv.Close() })
		}
		return port, out
	}
	t.Fatal("no port free on every origin address")
	return "", nil
}
