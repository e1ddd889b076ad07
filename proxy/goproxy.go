package proxy

// All goproxy glue lives in this file. goproxy v1.9.3's defaults that would
// hurt Sluice, and what we do about each (issue 3):
//
//   - NewProxyHttpServer sets Tr.Proxy = http.ProxyFromEnvironment and a
//     ConnectDial from HTTPS_PROXY: Tr is replaced by a transport that
//     refuses to dial, ConnectDial is cleared and ConnectDialWithReq
//     refuses; every request gets its route's RoundTripper through
//     ProxyCtx.RoundTripper. No environment variable is ever read.
//   - KeepAcceptEncoding false would drop the client's Accept-Encoding and
//     make the transport decompress: it is true, and our transports set
//     DisableCompression.
//   - A failed round trip answers 500 with the raw error as body: our
//     OnResponse handler turns a nil response into Sluice's own 502/504
//     text; ConnectionErrHandler does the same for CONNECT (never reached:
//     CONNECT is served in connect.go, which keeps the raw conn and the
//     bytes buffered behind the request).
//   - The default transport keeps 2 idle connections per host: ours keep 64.
//   - goproxy's WebSocket relay waits for one direction only and never
//     closes the hijacked conn: upgrades are served in serveUpgrade.
//   - goproxy/ext auth is not used; authentication happens before goproxy.
//   - On an error goproxy's OnResponse handlers see a nil response.
//   - goproxy's copy of the response body ignores errors, and the server
//     then ends the response as if it were complete (a final 0 chunk):
//     the body is wrapped (cutBody) to remember a read error, and
//     servePlain aborts the response when the copy failed either way.
//   - goproxy flushes only event streams and responses whose header map
//     says chunked (the transport never leaves it there): servePlain
//     flushes after every write, so that a slow body of any length is
//     relayed as it arrives.
//
// The per-request state reaches the handlers through the request's context
// and the single accessor stateOf.

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/elazarl/goproxy"
	"github.com/sluiceproxy/sluice/filter"
	"github.com/sluiceproxy/sluice/proxy/dial"
)

// errNoTransport is returned by goproxy's own transport, which must never
// be used: every request carries its route's RoundTripper.
var errNoTransport = errors.New("proxy: request without a route reached goproxy's transport")

// reqState is the per-request state shared with goproxy's handlers. It is
// the request's goproxy.RoundTripper too (no closure per request).
type reqState struct {
	x      *exchange
	w      *countingWriter
	route  string
	target target
	rt     http.RoundTripper // the route's, set by the OnRequest handler
	body   *cutBody          // the response body, once the round trip returned one
	cut    cutBody           // what body points to (one allocation with st)
}

// RoundTrip sends req on the route's transport and wraps the response
// body in st.body.
func (st *reqState) RoundTrip(req *http.Request, _ *goproxy.ProxyCtx) (*http.Response, error) {
	// Whether the client's connection closes is hop-by-hop: an HTTP/1.0
	// client (or "Connection: close") must not make the Transport add a
	// "Connection: close" the client never sent to the origin. The
	// client's own connection still closes.
	req.Close = false
	resp, err := st.rt.RoundTrip(req)
	if resp != nil && resp.Body != nil {
		// Wrapped before goproxy keeps it as the original body, so that
		// it keeps the Content-Length.
		st.cut = cutBody{ReadCloser: resp.Body}
		st.body = &st.cut
		resp.Body = st.body
	}
	return resp, err
}

type stateKey struct{}

// stateOf returns the request's state; nil for a request that did not come
// through servePlain (it then fails closed in the transport).
func stateOf(pctx *goproxy.ProxyCtx) *reqState {
	if pctx == nil || pctx.Req == nil {
		return nil
	}
	st, _ := pctx.Req.Context().Value(stateKey{}).(*reqState)
	return st
}

// newGoproxy builds the goproxy server for plain requests.
func (s *Server) newGoproxy() *goproxy.ProxyHttpServer {
	gp := goproxy.NewProxyHttpServer()
	gp.Logger = goproxyLogger{s}
	gp.Verbose = false
	gp.Tr = &http.Transport{
		Proxy: nil,
		DialContext: func(context.Context, string, string) (net.Conn, error) {
			return nil, errNoTransport
		},
		DisableCompression: true,
	}
	gp.ConnectDial = nil
	gp.ConnectDialWithReq = func(*http.Request, string, string) (net.Conn, error) { return nil, errNoTransport }
	gp.KeepAcceptEncoding = true
	gp.KeepHeader = false
	gp.KeepDestinationHeaders = false
	gp.NonproxyHandler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		textError(w, http.StatusBadRequest, "sluice: this is a proxy; send absolute-URI or CONNECT requests")
	})
	gp.ConnectionErrHandler = func(w io.Writer, pctx *goproxy.ProxyCtx, err error) {
		addr := ""
		if pctx != nil && pctx.Req != nil {
			addr = pctx.Req.Host
		}
		code, msg := dialFailure(addr, err)
		fmt.Fprintf(w, "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s\n",
			code, http.StatusText(code), len(msg)+1, msg)
	}
	gp.OnRequest().DoFunc(func(r *http.Request, pctx *goproxy.ProxyCtx) (*http.Request, *http.Response) {
		st := stateOf(pctx)
		if st == nil {
			return r, errorResponse(r, http.StatusInternalServerError, "sluice: request without a decision")
		}
		st.rt = s.transport(st.route)
		pctx.RoundTripper = st
		return r, nil
	})
	gp.OnResponse().DoFunc(func(resp *http.Response, pctx *goproxy.ProxyCtx) *http.Response {
		if resp == nil {
			st := stateOf(pctx)
			addr := ""
			var x *exchange
			if st != nil {
				addr = st.target.addr()
				st.x.err = pctx.Error
				st.x.dialErr = pctx.Error
				x = st.x
			}
			err := pctx.Error
			if err == nil {
				err = errors.New("proxy: no response")
			}
			code, msg, block := dialAnswer(x, addr, err)
			resp := errorResponse(pctx.Req, code, msg)
			if block != "" {
				resp.Header.Set(HeaderBlock, block)
			}
			return resp
		}
		removeHopByHop(resp.Header, false)
		return resp
	})
	return gp
}

// goproxyLogger sends goproxy's messages to the Logger at debug level.
type goproxyLogger struct{ s *Server }

func (l goproxyLogger) Printf(format string, v ...any) {
	l.s.logger().Debug("goproxy: " + strings.TrimSpace(fmt.Sprintf(format, v...)))
}

// errorResponse builds a short text response for goproxy to send.
func errorResponse(r *http.Request, code int, msg string) *http.Response {
	body := msg + "\n"
	h := http.Header{}
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	return &http.Response{
		StatusCode:    code,
		Status:        strconv.Itoa(code) + " " + http.StatusText(code),
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        h,
		Body:          io.NopCloser(strings.NewReader(body)),
		ContentLength: int64(len(body)),
		Request:       r,
	}
}

// transport returns the RoundTripper for route: the Transport hook's, or
// a default per-route *http.Transport on Dial.
func (s *Server) transport(route string) http.RoundTripper {
	if s.Transport != nil {
		if rt := s.Transport(route); rt != nil {
			return rt
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if tr, ok := s.transports[route]; ok {
		return tr
	}
	tr := &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return s.dial(ctx, route, network, addr)
		},
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       s.idleTimeout(),
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
		ForceAttemptHTTP2:     false,
		TLSNextProto:          map[string]func(string, *tls.Conn) http.RoundTripper{},
	}
	if s.transports == nil {
		s.transports = map[string]*http.Transport{}
	}
	s.transports[route] = tr
	return tr
}

// servePlain serves an absolute-URI request: decide on the URL's host and
// port, then forward through goproxy on the route's transport, or serve a
// WebSocket upgrade directly. ctx is the request's (ServeHTTP's detach);
// r still carries net/http's until servePlain copies it with ctx, once the
// request is allowed (one copy per request: this path runs for every
// keep-alive request).
func (s *Server) servePlain(ctx context.Context, x *exchange, w *countingWriter, r *http.Request) {
	x.target = r.URL.Host
	x.scheme, x.path = strings.ToLower(r.URL.Scheme), r.URL.EscapedPath()
	if !s.authenticate(x, w, r) {
		return
	}
	var defPort uint16
	switch strings.ToLower(r.URL.Scheme) {
	case "http":
		defPort = 80
	case "https":
		defPort = 443
	default:
		x.reason = "unsupported scheme"
		textError(w, http.StatusBadRequest, "sluice: unsupported scheme "+strconv.Quote(r.URL.Scheme))
		return
	}
	t, err := s.parseTarget(r.URL.Host, defPort)
	if err != nil {
		x.reason, x.err = "bad target", err
		textError(w, http.StatusBadRequest, "sluice: bad request target")
		return
	}
	x.target = t.addr()
	d := s.decide(x, t.host, t.port)
	if d.Verdict != filter.Allow {
		s.refusePlain(w, x, t, d)
		return
	}
	st := &reqState{x: x, w: w, route: d.Via, target: t}
	r = r.WithContext(context.WithValue(s.guarded(ctx, x), stateKey{}, st))
	// Forward to exactly what was decided. RFC 9112 3.2.2: with an
	// absolute-form target the Host header is replaced by the URI's host,
	// so a forged Host cannot reach another virtual host. User info in the
	// URI is dropped rather than turned into an Authorization header.
	host := t.host
	if strings.IndexByte(host, ':') >= 0 {
		host = "[" + host + "]"
	}
	if t.port != defPort {
		host = x.target // t.addr(): the bracketed host and the port
	}
	r.URL.Host, r.URL.User, r.Host = host, nil, ""
	if d.Enforce != "" {
		// SafeSearch: the connection (and the pool it is kept in) is the
		// enforcement host's; the Host header stays the client's.
		r.URL.Host, r.Host = dial.Redirect(t.addr(), d.Enforce), host
	}
	ws := isWebSocket(r.Header)
	removeHopByHop(r.Header, ws)
	if s.anonymize(d.Via) {
		anonymize(r.Header)
	}
	if _, ok := r.Header["User-Agent"]; !ok {
		r.Header["User-Agent"] = []string{""} // the transport adds none then
	}
	if ws {
		s.serveUpgrade(x, w, r, t, d)
		return
	}
	if r.Body != nil && r.Body != http.NoBody {
		cb := &countingBody{ReadCloser: r.Body}
		r.Body = cb
		defer func() { x.up = cb.n.Load() }()
	}
	w.flushEach = true
	s.gp.ServeHTTP(w, r)
	if st.body != nil && st.body.err != nil {
		abort(x, w, fmt.Errorf("proxy: response body from %s cut short: %w", t.addr(), st.body.err))
	}
	if w.err != nil {
		abort(x, w, fmt.Errorf("proxy: writing the response: %w", w.err))
	}
}

// abort ends a response whose body could not be relayed whole: what came
// is flushed, then the connection is closed without the final chunk (see
// ServeHTTP), so that the client sees a truncated response, never a
// complete-looking one.
func abort(x *exchange, w *countingWriter, err error) {
	x.err = err
	if w.err == nil {
		http.NewResponseController(w.ResponseWriter).Flush()
	}
	panic(http.ErrAbortHandler)
}

// serveUpgrade forwards a WebSocket upgrade: it dials the route, writes the
// request, and on 101 hijacks the client and splices both raw conns.
func (s *Server) serveUpgrade(x *exchange, w *countingWriter, r *http.Request, t target, d filter.Decision) {
	ctx := r.Context() // ServeHTTP's (detach) and guarded: it outlives the handler when a tunnel takes over
	origin, err := s.dial(ctx, d.Via, "tcp", dial.Redirect(t.addr(), d.Enforce))
	if err != nil {
		x.err = err
		s.failDial(w, x, t.addr(), err)
		return
	}
	if strings.EqualFold(r.URL.Scheme, "https") {
		tc := tls.Client(origin, &tls.Config{ServerName: t.host})
		hctx, hcancel := context.WithTimeout(ctx, s.dialTimeout())
		err := tc.HandshakeContext(hctx)
		hcancel()
		if err != nil {
			origin.Close()
			x.err = err
			textError(w, http.StatusBadGateway, "sluice: TLS handshake with "+t.addr()+" failed")
			return
		}
		origin = tc
	}
	origin.SetDeadline(time.Now().Add(s.handshakeTimeout()))
	br := bufio.NewReader(origin)
	var resp *http.Response
	if err = r.Write(origin); err == nil {
		resp, err = http.ReadResponse(br, r)
	}
	if err != nil {
		origin.Close()
		x.err = err
		code, msg := dialFailure(t.addr(), err)
		textError(w, code, msg)
		return
	}
	origin.SetDeadline(time.Time{})
	if resp.StatusCode != http.StatusSwitchingProtocols {
		// The origin declined: pass its answer on and forget the conn.
		defer origin.Close()
		defer resp.Body.Close()
		removeHopByHop(resp.Header, false)
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		w.flushEach = true
		if _, err := io.Copy(w, resp.Body); err != nil {
			abort(x, w, fmt.Errorf("proxy: relaying the response of %s: %w", t.addr(), err))
		}
		return
	}
	removeHopByHop(resp.Header, true)
	head := func(w io.Writer) error {
		bw := bufio.NewWriter(w)
		fmt.Fprintf(bw, "HTTP/1.1 101 %s\r\n", http.StatusText(http.StatusSwitchingProtocols))
		resp.Header.Write(bw)
		bw.WriteString("\r\n")
		return bw.Flush()
	}
	s.tunnel(ctx, x, w, origin, buffered(br), http.StatusSwitchingProtocols, head)
}

// hopByHop are the headers that concern one connection only (RFC 9110
// 7.6.1), in canonical form.
var hopByHop = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authorization",
	"Proxy-Authenticate", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// removeHopByHop deletes the hop-by-hop headers and those Connection
// names. With upgrade set (a WebSocket handshake) it keeps Upgrade and
// sends Connection: Upgrade.
func removeHopByHop(h http.Header, upgrade bool) {
	for _, v := range h["Connection"] {
		for f := range strings.SplitSeq(v, ",") {
			f = textproto.TrimString(f)
			if f == "" || upgrade && strings.EqualFold(f, "Upgrade") {
				continue
			}
			h.Del(f)
		}
	}
	for _, k := range hopByHop {
		if upgrade && k == "Upgrade" {
			continue
		}
		delete(h, k)
	}
	if upgrade {
		h.Set("Connection", "Upgrade")
	}
}

// identifying are the headers anonymized routes drop, besides Proxy-*.
var identifying = []string{"Via", "X-Forwarded-For", "Forwarded", "X-Real-Ip", "From", "X-Forwarded-Host", "X-Forwarded-Proto"}

// anonymize deletes headers that identify the client or its proxies.
func anonymize(h http.Header) {
	for _, k := range identifying {
		delete(h, k)
	}
	for k := range h {
		if strings.HasPrefix(textproto.CanonicalMIMEHeaderKey(k), "Proxy-") {
			delete(h, k)
		}
	}
}

// isWebSocket reports a WebSocket handshake: Connection lists "upgrade"
// and Upgrade lists "websocket".
func isWebSocket(h http.Header) bool {
	return hasToken(h["Connection"], "upgrade") && hasToken(h["Upgrade"], "websocket")
}

func hasToken(values []string, token string) bool {
	for _, v := range values {
		for f := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(textproto.TrimString(f), token) {
				return true
			}
		}
	}
	return false
}

// cutBody is a response body that remembers its first read error other
// than io.EOF: the origin cut the body short (or the round trip ended).
// goproxy reads it on the handler's goroutine, servePlain looks after.
type cutBody struct {
	io.ReadCloser
	err error
}

func (b *cutBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF && b.err == nil {
		b.err = err
	}
	return n, err
}

// copyBufs holds the buffers cutBody.WriteTo copies through: without it,
// goproxy's io.Copy allocates 32 KiB for every response.
var copyBufs = sync.Pool{New: func() any { return new([32 << 10]byte) }}

// WriteTo copies the body to w through a pooled buffer, as io.Copy would
// (io.Copy calls it): each chunk read is written before the next read, a
// read error is remembered as Read does, and a write error ends the copy.
func (b *cutBody) WriteTo(w io.Writer) (int64, error) {
	buf := copyBufs.Get().(*[32 << 10]byte)
	defer copyBufs.Put(buf)
	var total int64
	for {
		n, rerr := b.Read(buf[:])
		if n > 0 {
			m, werr := w.Write(buf[:n])
			total += int64(m)
			if werr == nil && m < n {
				werr = io.ErrShortWrite
			}
			if werr != nil {
				return total, werr
			}
		}
		if rerr == io.EOF {
			return total, nil
		}
		if rerr != nil {
			return total, rerr
		}
	}
}

// countingBody counts the request body bytes the transport reads.
type countingBody struct {
	io.ReadCloser
	n atomic.Int64 // the transport may still read after the response
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}
