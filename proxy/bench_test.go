package proxy

import (
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"testing"

	"github.com/sluiceproxy/sluice/filter"
	"github.com/sluiceproxy/sluice/proxy/accesslog"
	"github.com/sluiceproxy/sluice/proxy/dial"
)

// allowAll allows every request without remembering it.
type allowAll struct{}

func (allowAll) Decide(filter.Request) filter.Decision {
	return filter.Decision{Verdict: filter.Allow, Reason: "no rule matched", Default: true}
}

// BenchmarkKeepAlivePlain is the keep-alive load of issue 13 in one
// process: absolute-URI GETs of 1 KiB on one kept-alive client connection
// through the proxy to a loopback origin. Its allocs/op (client and origin
// included, constant) is the figure to compare across changes of the
// plain-request path: go test -run '^$' -bench KeepAlivePlain -benchmem ./proxy/
func BenchmarkKeepAlivePlain(b *testing.B) { benchKeepAlive(b, nil) }

// BenchmarkKeepAlivePlainRouter is BenchmarkKeepAlivePlain on the
// transports sluice serve uses: a dial.Router's, whose direct route
// sends simple requests on its own keep-alive pool.
func BenchmarkKeepAlivePlainRouter(b *testing.B) {
	r, err := dial.NewRouter(dial.Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer r.CloseIdleConnections()
	benchKeepAlive(b, r.Transport)
}

func benchKeepAlive(b *testing.B, transport func(route string) http.RoundTripper) {
	body := strings.Repeat("x", 1024)
	oln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	origin := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		io.WriteString(w, body)
	})}
	go origin.Serve(oln)
	defer origin.Close()

	pln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	s := &Server{ // as proxy/server sets it up: a Guard, an Access sink
		Policy: allowAll{},
		Dial:   (&testDial{}).Dial,
		Guard: func(*filter.Request, *filter.Decision, netip.AddrPort) (*filter.Decision, error) {
			return nil, nil
		},
		Access:    func(*accesslog.Record) {},
		Transport: transport,
	}
	_, stop := serve(s, pln)
	defer stop()

	tr := &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: pln.Addr().String()}), DisableCompression: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}
	target := "http://" + oln.Addr().String() + "/1k"
	get := func() {
		resp, err := c.Get(target)
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || n != int64(len(body)) || resp.StatusCode != http.StatusOK {
			b.Fatalf("status %d, %d bytes, %v", resp.StatusCode, n, err)
		}
	}
	get() // the connections are made before the timer
	b.ReportAllocs()
	for b.Loop() {
		get()
	}
}
