// Package sniffpolicy is the policy step of a sniffed tunnel, shared by the
// CONNECT and SOCKS front ends: after the first decision allowed a tunnel
// and the client got its success reply, it reads the client's first bytes
// with package sniff and decides again with the name they carry (same
// client, user, port and time). The front end then dials the address the
// client asked for, never a lookup of the sniffed name, and forwards the
// bytes read unchanged; or it closes the connection when the second
// decision blocks.
package sniffpolicy

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/sluiceproxy/sluice/filter"
	"github.com/sluiceproxy/sluice/proxy/relay"
	"github.com/sluiceproxy/sluice/proxy/sniff"
	"github.com/sluiceproxy/sluice/rules"
)

// ReasonSniffed is the Reason of a decision that blocks a tunnel after
// sniffing: the sniffed name is blocked, ambiguous, or missing where
// sniff_unnamed blocks.
const ReasonSniffed = "sniffed"

// Policy decides a request. *filter.Engine implements it.
type Policy interface {
	Decide(filter.Request) filter.Decision
}

// Config says which tunnels are sniffed and how. The zero Config sniffs
// nothing.
type Config struct {
	// Mode is rules.SniffIP, rules.SniffAll or rules.SniffOff. Empty means off.
	Mode rules.SniffMode
	// Unnamed is the action for TLS to an IP literal that names no usable
	// host. Empty means rules.Allow.
	Unnamed rules.Action
	// Options bounds each sniff (zero fields take sniff's defaults).
	Options sniff.Options
}

// Wants reports whether a tunnel to host (normalized) is sniffed.
func (c Config) Wants(host string) bool {
	switch c.Mode {
	case rules.SniffAll:
		return true
	case rules.SniffIP:
		return isIP(host)
	}
	return false
}

// Outcome is what a sniffed tunnel came to.
type Outcome struct {
	// Result is what sniff read; Result.Data must be forwarded first.
	Result sniff.Result
	// Name is the sniffed name, normalized; "" when there is none or it is
	// not a valid host name.
	Name string
	// Decision is the final decision: the first one, or the one taken
	// with Name, or a block with ReasonSniffed.
	Decision filter.Decision
}

// Check sniffs c and decides the tunnel again. req is the request that
// the first decision d allowed. The final Decision allows only when both
// d and the decision on the sniffed name allow; an allowed tunnel takes
// the route (Via) of the sniffed name's decision. Without a usable name
// (nothing sent within the wait, neither TLS nor HTTP, Encrypted Client
// Hello, no SNI or Host) d stands, except for TLS to an IP literal, which
// follows c.Unnamed. Bytes that name several hosts (sniff.ErrAmbiguous)
// are blocked. A nil Policy blocks.
func Check(conn net.Conn, c Config, p Policy, req filter.Request, d filter.Decision) Outcome {
	return decide(sniff.Read(conn, c.Options), c, p, req, d)
}

// decide is Check's decision on what was read.
func decide(r sniff.Result, c Config, p Policy, req filter.Request, d filter.Decision) Outcome {
	o := Outcome{Result: r, Decision: d}
	blocked := func(base filter.Decision) Outcome {
		base.Verdict, base.Reason, base.Via = filter.Block, ReasonSniffed, ""
		o.Decision = base
		return o
	}
	if errors.Is(r.Err, sniff.ErrAmbiguous) {
		return blocked(filter.Decision{})
	}
	if r.Name != "" && !r.ECH {
		if name, err := rules.NormalizeHost(r.Name); err == nil {
			o.Name = name
		}
	}
	if o.Name == "" {
		if r.Proto == sniff.TLS && isIP(req.Host) && c.Unnamed == rules.Block {
			return blocked(filter.Decision{})
		}
		return o
	}
	if o.Name == req.Host {
		return o
	}
	req.Host = o.Name
	d2 := filter.Decision{Verdict: filter.Block, Reason: "no policy configured", Default: true}
	if p != nil {
		d2 = p.Decide(req)
	}
	if d2.Verdict != filter.Allow {
		return blocked(d2)
	}
	o.Decision = d2
	return o
}

// Late continues a tunnel whose client sent nothing within the wait
// (o.Result.Proto is sniff.None), once origin has been dialed on o's
// decision: it waits, at most idle (zero means 5m) or until ctx ends, for
// whichever side speaks first. When the origin does (a protocol where the
// server speaks first), o's decision stands. When the client does, its
// first bytes are sniffed and decided as Check does them, so that a client
// cannot slip a ClientHello past the sniff by waiting: the origin has then
// been connected to, but a block forwards no byte to it. Late returns the
// outcome, whose Result.Data must be forwarded to the origin first, and
// the bytes already read from the origin, to be forwarded to the client
// first. It clears both conns' read deadlines before it returns.
func Late(ctx context.Context, client, origin net.Conn, c Config, p Policy, req filter.Request, o Outcome, idle time.Duration) (Outcome, []byte) {
	if idle <= 0 {
		idle = 5 * time.Minute
	}
	type chunk struct {
		b   []byte
		err error
	}
	readOnce := func(conn net.Conn, ch chan<- chunk) {
		buf := make([]byte, 4096)
		n, err := conn.Read(buf)
		ch <- chunk{buf[:n], err}
	}
	deadline := time.Now().Add(idle)
	client.SetReadDeadline(deadline)
	origin.SetReadDeadline(deadline)
	defer client.SetReadDeadline(time.Time{})
	defer origin.SetReadDeadline(time.Time{})
	stop := context.AfterFunc(ctx, func() {
		client.SetReadDeadline(aLongTimeAgo)
		origin.SetReadDeadline(aLongTimeAgo)
	})
	defer stop()
	fromClient, fromOrigin := make(chan chunk, 1), make(chan chunk, 1)
	go readOnce(client, fromClient)
	go readOnce(origin, fromOrigin)
	var cc, oc chunk
	clientFirst := false
	select {
	case cc = <-fromClient:
		clientFirst = len(cc.b) > 0
		origin.SetReadDeadline(aLongTimeAgo) // stop the other read, keeping what it got
		oc = <-fromOrigin
	case oc = <-fromOrigin:
		client.SetReadDeadline(aLongTimeAgo)
		cc = <-fromClient
	}
	if !clientFirst || ctx.Err() != nil {
		o.Result.Data = cc.b
		return o, oc.b
	}
	client.SetReadDeadline(time.Time{})
	pc := relay.WithPrefix(client, cc.b)
	r := sniff.Read(pc, c.Options)
	if _, rest := relay.Unwrap(pc); len(rest) > 0 { // what sniffing left of cc.b
		r.Data = append(r.Data, rest...)
	}
	return decide(r, c, p, req, o.Decision), oc.b
}

// aLongTimeAgo is a deadline in the past: it interrupts a blocked Read.
var aLongTimeAgo = time.Unix(1, 0)

// LogAttrs returns the attributes of the access line that tell what was
// sniffed: sniff (tls, tls-ech, http, other, none), sniffed (the name as
// sent, when there is one) and sniff_err (why there is no usable name).
func (o Outcome) LogAttrs() []slog.Attr {
	kind := o.Result.Proto.String()
	if o.Result.ECH {
		kind += "-ech"
	}
	attrs := []slog.Attr{slog.String("sniff", kind)}
	if n := o.Result.Name; n != "" {
		if len(n) > 255 {
			n = n[:255] // an HTTP Host can be long; a name is not
		}
		attrs = append(attrs, slog.String("sniffed", n))
	}
	if o.Result.Err != nil {
		attrs = append(attrs, slog.String("sniff_err", o.Result.Err.Error()))
	}
	return attrs
}

// isIP reports whether a normalized host is an IP literal.
func isIP(host string) bool {
	_, err := netip.ParseAddr(host)
	return err == nil
}
