package proxy

// Plain (absolute-URI) requests are served here, without goproxy since
// issue 13: the request is decided, cleaned and sent on its route's
// RoundTripper from the handler's goroutine, and the answer is relayed by
// forward. What goproxy did that Sluice relies on, and what replaced it:
//
//   - Hop-by-hop headers (Connection and what it names, Proxy-*, Te,
//     Trailer, Upgrade, ...) are removed both ways by removeHopByHop;
//     Accept-Encoding passes through and the transports never ask for
//     compression (DisableCompression), so bodies are relayed as they come.
//   - A failed round trip is answered with Sluice's own 403/502/504 text
//     (failDial), never with the raw error.
//   - Announced and late response trailers are relayed (as
//     httputil.ReverseProxy does).
//   - The response body is copied through cutBody, which remembers a read
//     error, and servePlain aborts the response when the copy failed
//     either way, so that a cut body reaches the client as a cut (no final
//     chunk), never as a complete-looking response.
//   - Every write of the body is flushed (countingWriter.flushEach), so
//     that a slow body of any length is relayed as it arrives, except the
//     last bytes, those that came with io.EOF: they leave with the rest
//     of the answer (a final chunk, or nothing), so that a small answer
//     goes out in one write, headers and body together.
//   - No Content-Type is guessed for an answer without one.
//
// WebSocket upgrades are served in serveUpgrade; CONNECT in connect.go.

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
	"sync/atomic"
	"time"

	"github.com/sluiceproxy/sluice/filter"
	"github.com/sluiceproxy/sluice/proxy/dial"
	"github.com/sluiceproxy/sluice/proxy/relay"
)

// forward sends r, allowed and cleaned, on the route's RoundTripper and
// relays the answer to w: the status, the headers without the hop-by-hop
// ones, the body through cutBody (body, which servePlain inspects), and
// the trailers. A failed round trip is answered by failDial.
func (s *Server) forward(x *exchange, w *countingWriter, r *http.Request, t target, route string, body *cutBody) {
	// Whether the client's connection closes is hop-by-hop: an HTTP/1.0
	// client (or "Connection: close") must not make the Transport add a
	// "Connection: close" the client never sent to the origin. The
	// client's own connection still closes.
	r.Close = false
	r.RequestURI = "" // a server's request: a client must not send it
	resp, err := s.transport(route).RoundTrip(r)
	if err == nil && resp == nil {
		err = errors.New("proxy: no response")
	}
	if err != nil {
		if resp != nil && resp.Body != nil {
			resp.Body.Close()
		}
		err = body.silent.cause(err)
		x.err = err
		s.failDial(w, x, t.addr(), err)
		return
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		// The request asked for no switch (its Upgrade was removed; a
		// WebSocket goes to serveUpgrade): relaying the 101 without a
		// tunnel would leave the client's connection in a protocol nobody
		// speaks, and whatever followed would be taken for answers.
		if resp.Body != nil {
			resp.Body.Close()
		}
		x.err = fmt.Errorf("proxy: %s switched protocols unasked", t.addr())
		textError(w, http.StatusBadGateway, "sluice: "+t.addr()+" answered 101 Switching Protocols to a request without Upgrade")
		return
	}
	body.silent.progress() // the answer's head came
	body.ReadCloser = resp.Body
	defer body.Close()
	removeHopByHop(resp.Header, false)
	h := w.Header()
	clear(h)
	for k, v := range resp.Header {
		h[k] = v
	}
	if _, ok := h["Content-Type"]; !ok {
		// The origin gave none: the server must not guess one from the
		// body (net/http would sniff and add it), the client decides.
		h["Content-Type"] = nil
	}
	// Trailers announced now make the server commit to chunked encoding;
	// late ones are sent with http.TrailerPrefix after the body.
	announced := len(resp.Trailer)
	if announced > 0 {
		keys := make([]string, 0, announced)
		for k := range resp.Trailer {
			keys = append(keys, k)
		}
		h["Trailer"] = []string{strings.Join(keys, ", ")}
	}
	w.WriteHeader(resp.StatusCode)
	w.flushEach = true
	if _, err := body.WriteTo(w); err != nil {
		return // servePlain aborts: body.err or w.err says which side failed
	}
	if resp.ContentLength >= 0 && len(resp.Trailer) == 0 {
		// The answer is whole and nothing follows it: flushing costs no
		// write of its own and tells a client that went away (w.err).
		w.flushErr()
	}
	if len(resp.Trailer) > 0 {
		w.Flush() // chunked even for a short body, or the trailers are lost
		for k, vs := range resp.Trailer {
			if len(resp.Trailer) != announced {
				k = http.TrailerPrefix + k
			}
			h[k] = vs
		}
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
// port, then forward it on the route's transport, or serve a WebSocket
// upgrade. ctx is the request's (ServeHTTP's detach);
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
	ws := isWebSocket(r.Header)
	rctx := s.guarded(ctx, x)
	var silent *silence // a WebSocket becomes a tunnel: the relay watches its idle time
	if !ws {
		rctx, silent = watchOrigin(rctx, s.idleTimeout())
		defer silent.stop()
	}
	r = r.WithContext(rctx)
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
		cb := &countingBody{ReadCloser: r.Body, silent: silent}
		r.Body = cb
		defer func() { x.up = cb.n.Load() }()
	}
	body := cutBody{silent: silent}
	s.forward(x, w, r, t, d.Via, &body)
	if body.err != nil {
		abort(x, w, fmt.Errorf("proxy: response body from %s cut short: %w", t.addr(), silent.cause(body.err)))
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
// forward reads it on the handler's goroutine, servePlain looks after.
type cutBody struct {
	io.ReadCloser
	err    error
	silent *silence // told of every byte read; may be nil
}

func (b *cutBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.silent.progress()
	}
	if err != nil && err != io.EOF && b.err == nil {
		b.err = err
	}
	return n, err
}

// WriteTo copies the body to w as io.Copy would, but through a pooled
// buffer (relay.Buffer; io.Copy would allocate 32 KiB per response), for
// forward: each chunk read is written before the next read, a
// read error is remembered as Read does, and a write error ends the copy.
// The last bytes, those that came with io.EOF, are not flushed when w is
// a countingWriter: the handler's end writes them with the rest of the
// answer (the final chunk), in one write instead of two.
func (b *cutBody) WriteTo(w io.Writer) (int64, error) {
	bp := relay.Buffer()
	defer relay.PutBuffer(bp)
	buf := *bp
	var total int64
	for {
		n, rerr := b.Read(buf)
		if n > 0 {
			if cw, ok := w.(*countingWriter); ok && rerr == io.EOF {
				cw.flushEach = false // nothing more will come to wait for
			}
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
	n      atomic.Int64 // the transport may still read after the response
	silent *silence     // told of every byte read; may be nil
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	if n > 0 {
		b.silent.progress()
	}
	return n, err
}
