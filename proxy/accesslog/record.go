// Package accesslog writes Sluice's access log: both front ends describe
// each request, tunnel or SOCKS connection as one Record, and one Log
// formats it, as JSON (the default) or in Squid's native access.log
// format, to stderr or to a file that SIGUSR1 reopens (for logrotate).
// It depends on the standard library only.
package accesslog

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Record is what one access line reports. Front ends fill it; the Log
// formats it. It never holds a password.
type Record struct {
	// ID is the request id (reqid): on the access line as request_id and
	// on the block page.
	ID string
	// Start is when the request or connection began.
	Start time.Time
	// Duration is how long it was served.
	Duration time.Duration
	// Client is the client's address, host:port.
	Client string
	// Proto is "http", "socks5", "socks4", "socks4a", "socks" (the
	// version byte was never read) or "transparent" (a redirected
	// connection; Target is its original destination).
	Proto string
	// Cmd is the SOCKS command ("connect", "udp", ...); empty for HTTP.
	Cmd string
	// Method is the HTTP method; empty for SOCKS.
	Method string
	// Target is the destination, host:port.
	Target string
	// Scheme and Path are a plain HTTP request's scheme and URL path
	// (without the query); empty for tunnels.
	Scheme, Path string
	// User is the authenticated (or claimed) user name; empty for none.
	User string
	// Decided reports whether the policy decided; Verdict, Reason, Rule,
	// Category and Route are the decision's. When not decided, Reason
	// says why (e.g. "not a proxy request"). For a failover list, Route
	// names the member that carried the connection: "pool/office".
	Decided                                bool
	Verdict, Reason, Rule, Category, Route string
	// WouldBlock is set when a report-only rule (mode: report) would
	// have blocked the allowed request; WouldBlockRule names that rule.
	WouldBlock     bool
	WouldBlockRule string
	// SafeSearch is the enforcement host dialed instead of the target's
	// host under a safesearch rule; "" otherwise.
	SafeSearch string
	// Status is the HTTP status answered; 0 for none (the client went
	// away first). SOCKS sets it only to 407, for a failed authentication.
	Status int
	// Reply is the SOCKS reply code sent; -1 for none (HTTP).
	Reply int
	// Granted reports whether a SOCKS connection was granted.
	Granted bool
	// Up and Down count bytes client→origin and origin→client.
	Up, Down int64
	// UDPBlocked and UDPDropped count a UDP association's datagrams
	// dropped by the policy and for other reasons (Cmd "udp" only).
	UDPBlocked, UDPDropped int64
	// Peer is the origin address dialed directly, when known.
	Peer netip.Addr
	// ContentType is the response's Content-Type; empty for none.
	ContentType string
	// Err is what went wrong, if anything.
	Err error
	// Sniffed holds what a sniffed tunnel's first bytes carried
	// (sniffpolicy.Outcome.LogAttrs: sniff, sniffed, sniff_err), written
	// after the decision's fields of the JSON line; nil for none.
	Sniffed []slog.Attr
}

// tunnel reports whether r is CONNECT-like: an HTTP CONNECT or a SOCKS
// connection.
func (r *Record) tunnel() bool { return r.Method == "CONNECT" || r.Method == "" }

// attrs appends r's JSON line's fields to a, in a fixed order.
func (r *Record) attrs(a []slog.Attr) []slog.Attr {
	a = append(a,
		slog.String("request_id", r.ID),
		slog.String("client", r.Client),
		slog.String("proto", r.Proto))
	if r.Proto == "http" {
		a = append(a, slog.String("method", r.Method), slog.String("target", r.Target))
		if r.Path != "" {
			a = append(a, slog.String("path", r.Path))
		}
		if r.User != "" {
			a = append(a, slog.String("user", r.User))
		}
	} else if r.Proto == "transparent" { // no proxy request: the original destination
		a = append(a, slog.String("target", r.Target))
	} else { // SOCKS lines always had cmd and user, in this order
		a = append(a, slog.String("cmd", r.Cmd), slog.String("user", r.User), slog.String("target", r.Target))
	}
	if r.Decided {
		a = append(a,
			slog.String("verdict", r.Verdict),
			slog.String("reason", r.Reason),
			slog.String("rule", r.Rule),
			slog.String("category", r.Category),
			slog.String("route", r.Route))
		a = append(a, r.Sniffed...)
		if r.WouldBlock {
			a = append(a, slog.Bool("would_block", true), slog.String("would_block_rule", r.WouldBlockRule))
		}
		if r.SafeSearch != "" {
			a = append(a, slog.String("safesearch", r.SafeSearch))
		}
	} else {
		a = append(a, slog.String("verdict", "none"))
		if r.Reason != "" || r.Proto == "http" {
			a = append(a, slog.String("reason", r.Reason))
		}
	}
	if r.Proto == "http" || r.Proto == "transparent" && r.Status != 0 {
		a = append(a, slog.Int("status", r.Status))
	}
	if r.Reply >= 0 {
		a = append(a, slog.String("reply", "0x"+hex2(r.Reply)))
	}
	if r.Peer.IsValid() {
		a = append(a, slog.String("peer", r.Peer.String()))
	}
	a = append(a,
		slog.Int64("up", r.Up),
		slog.Int64("down", r.Down),
		slog.Duration("dur", r.Duration))
	if r.Cmd == "udp" {
		a = append(a, slog.Int64("udp_blocked", r.UDPBlocked), slog.Int64("udp_dropped", r.UDPDropped))
	}
	if r.Err != nil {
		a = append(a, slog.String("err", r.Err.Error()))
	}
	return a
}

func hex2(n int) string {
	s := strconv.FormatInt(int64(n), 16)
	if len(s) < 2 {
		s = "0" + s
	}
	return s
}

// LogJSON writes r to l as one "access" line at level Info: the JSON
// format (a text line when l's handler is a text handler).
func LogJSON(l *slog.Logger, r *Record) {
	ctx := context.Background()
	if !l.Enabled(ctx, slog.LevelInfo) {
		return // the line would be dropped: build nothing
	}
	a := attrBufs.Get().(*[]slog.Attr)
	*a = r.attrs((*a)[:0])
	// One group without a key, which handlers inline: the same line as
	// the fields one by one, but an slog.Record holds only five fields
	// inline and would allocate for the rest on every line.
	l.LogAttrs(ctx, slog.LevelInfo, "access", slog.Attr{Value: slog.GroupValue(*a...)})
	clear(*a) // keep no strings alive in the pool
	attrBufs.Put(a)
}

// attrBufs holds the slices LogJSON builds a line's fields in, one line
// after another. slog's GroupValue wants a slice that is not changed
// afterwards: that holds here because the handlers Sluice logs through
// (slog's JSON and text handlers, see cmd/sluice) write the line before
// LogAttrs returns. A handler that kept records for later (an async or
// buffering handler) would need LogJSON to build a fresh slice instead.
var attrBufs = sync.Pool{New: func() any { a := make([]slog.Attr, 0, 32); return &a }}

// Squid returns r in Squid's native access.log format, without the
// newline:
//
//	time.ms elapsed client code/status bytes method URL user hierarchy/peer type
//
// time is the start in Unix seconds with milliseconds, elapsed is in
// milliseconds, client is the client's IP, bytes is what was sent to the
// client, URL is host:port for tunnels and scheme://host/path (no query)
// for plain requests, type is the response's media type without
// parameters, and user, peer and type are "-" when unknown. Fields
// that carry client-supplied text never contain a space.
func Squid(r *Record) string { return string(appendSquid(nil, r)) }

// appendSquid appends Squid(r) to b.
func appendSquid(b []byte, r *Record) []byte {
	ms := r.Start.UnixMilli()
	b = strconv.AppendInt(b, ms/1000, 10)
	b = append(b, '.')
	b = appendPadded(b, ms%1000, 3, '0')
	b = appendPadded(b, r.Duration.Milliseconds(), 7, ' ')
	b = append(b, ' ')
	if ap, err := netip.ParseAddrPort(r.Client); err == nil && ap.Addr().Zone() == "" {
		b = ap.Addr().Unmap().AppendTo(b) // the client's IP: nothing to escape
	} else if err == nil {
		b = appendField(b, ap.Addr().Unmap().String())
	} else {
		b = appendField(b, r.Client)
	}
	b = append(b, ' ')
	code, status := r.squidCode()
	b = append(b, code...)
	b = append(b, '/')
	b = appendPadded(b, int64(status), 3, '0')
	b = append(b, ' ')
	b = strconv.AppendInt(b, r.Down, 10)
	b = append(b, ' ')
	b = appendField(b, r.squidMethod())
	b = append(b, ' ')
	b = r.appendSquidURL(b)
	b = append(b, ' ')
	b = appendField(b, r.User)
	b = append(b, ' ')
	b = r.appendHierarchy(b)
	b = append(b, ' ')
	return appendField(b, mediaType(r.ContentType))
}

// appendPadded appends n in decimal, padded on the left with pad to width
// (for the elapsed time: at least one space before it).
func appendPadded(b []byte, n int64, width int, pad byte) []byte {
	var digits [20]byte
	d := strconv.AppendInt(digits[:0], n, 10)
	fill := width - len(d)
	if pad == ' ' {
		fill = max(1, fill)
	}
	for range max(0, fill) {
		b = append(b, pad)
	}
	return append(b, d...)
}

// squidCode returns Squid's result code and the HTTP status: TCP_MISS for
// a plain request served, TCP_TUNNEL for a tunnel, TCP_DENIED for a
// block or an authentication failure, NONE for a request refused before
// any decision.
func (r *Record) squidCode() (string, int) {
	status := r.Status
	if r.Method == "" { // SOCKS: the reply as the HTTP status a CONNECT would get
		switch {
		case r.Granted:
			status = 200
		case r.Decided && r.Verdict != "allow":
			status = 403
		case r.Decided:
			status = 503
		case status == 407: // authentication failed
		default:
			status = 0
		}
	}
	switch {
	case r.Decided && r.Verdict != "allow", status == 407:
		return "TCP_DENIED", status
	case !r.Decided:
		return "NONE", status
	case r.tunnel():
		return "TCP_TUNNEL", status
	}
	return "TCP_MISS", status
}

func (r *Record) squidMethod() string {
	if r.Method != "" {
		return r.Method
	}
	if r.Cmd == "" || r.Cmd == "connect" {
		return "CONNECT"
	}
	if r.Cmd == "udp" {
		return "UDP_ASSOCIATE"
	}
	return strings.ToUpper(r.Cmd)
}

// appendSquidURL appends the URL field: host:port for tunnels,
// scheme://host/path (the port only when not the scheme's) for plain
// requests, "-" for none.
func (r *Record) appendSquidURL(b []byte) []byte {
	if r.Target == "" {
		return append(b, '-')
	}
	if r.tunnel() || r.Scheme == "" {
		return appendField(b, r.Target)
	}
	host, bracket := r.Target, false
	if h, p, err := net.SplitHostPort(r.Target); err == nil && (r.Scheme == "http" && p == "80" || r.Scheme == "https" && p == "443") {
		host, bracket = h, strings.Contains(h, ":")
	}
	b = appendEscapedField(b, r.Scheme)
	b = append(b, "://"...)
	if bracket {
		b = append(b, '[')
	}
	b = appendEscapedField(b, host)
	if bracket {
		b = append(b, ']')
	}
	if r.Path == "" {
		return append(b, '/')
	}
	return appendEscapedField(b, r.Path)
}

// appendHierarchy appends Squid's hierarchy/peer field: HIER_DIRECT/ip
// for a direct dial, FIRSTUP_PARENT/name for a request allowed through an
// upstream, HIER_NONE/- when nothing was dialed (refused, or a direct dial
// failed). A failover list's member ("pool/office") is named alone,
// without a slash that Squid's parsers would split on; "pool/direct" is
// direct.
func (r *Record) appendHierarchy(b []byte) []byte {
	member := r.Route[strings.LastIndexByte(r.Route, '/')+1:]
	direct := member == "direct" || member == ""
	dialed := r.Decided && r.Verdict == "allow" &&
		(!direct || r.Status != 0 && r.Status < 500 || r.Granted || r.Peer.IsValid())
	switch {
	case !dialed:
		return append(b, "HIER_NONE/-"...)
	case direct:
		b = append(b, "HIER_DIRECT/"...)
		if r.Peer.IsValid() {
			return r.Peer.AppendTo(b)
		}
		host, _, err := net.SplitHostPort(r.Target)
		if err != nil {
			host = r.Target
		}
		return appendField(b, host)
	}
	b = append(b, "FIRSTUP_PARENT/"...)
	return appendField(b, member)
}

// mediaType returns a Content-Type without its parameters ("text/html"
// of "text/html; charset=utf-8"): one field, as report tools count it.
func mediaType(ct string) string {
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	return strings.TrimSpace(ct)
}

// appendField appends s as one whitespace-free field: "-" when empty,
// spaces and control characters percent-encoded (as Squid does), so that
// a client's text never shifts the fields after it.
func appendField(b []byte, s string) []byte {
	if s == "" {
		return append(b, '-')
	}
	return appendEscapedField(b, s)
}

// appendEscapedField appends s with spaces, control characters and '%'
// percent-encoded.
func appendEscapedField(b []byte, s string) []byte {
	const upperHex = "0123456789ABCDEF"
	start := 0
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c == 0x7f || c == '%' {
			b = append(b, s[start:i]...)
			b = append(b, '%', upperHex[c>>4], upperHex[c&0xF])
			start = i + 1
		}
	}
	return append(b, s[start:]...)
}
