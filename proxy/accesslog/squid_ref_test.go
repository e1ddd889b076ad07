package accesslog

import (
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The Squid line as it was built before it was appended to a buffer
// (strings joined and formatted field by field): the reference that
// TestSquidMatchesReference holds appendSquid to.

func squidRef(r *Record) string {
	var b strings.Builder
	ms := r.Start.UnixMilli()
	b.WriteString(strconv.FormatInt(ms/1000, 10))
	b.WriteByte('.')
	frac := strconv.FormatInt(ms%1000, 10)
	b.WriteString(strings.Repeat("0", 3-len(frac)) + frac)
	el := strconv.FormatInt(r.Duration.Milliseconds(), 10)
	b.WriteString(strings.Repeat(" ", max(1, 7-len(el))))
	b.WriteString(el)
	b.WriteByte(' ')
	b.WriteString(fieldRef(clientIPRef(r.Client)))
	b.WriteByte(' ')
	code, status := r.squidCode()
	b.WriteString(code)
	b.WriteByte('/')
	st := strconv.Itoa(status)
	b.WriteString(strings.Repeat("0", max(0, 3-len(st))) + st)
	b.WriteByte(' ')
	b.WriteString(strconv.FormatInt(r.Down, 10))
	b.WriteByte(' ')
	b.WriteString(fieldRef(r.squidMethod()))
	b.WriteByte(' ')
	b.WriteString(fieldRef(squidURLRef(r)))
	b.WriteByte(' ')
	b.WriteString(fieldRef(r.User))
	b.WriteByte(' ')
	b.WriteString(hierarchyRef(r))
	b.WriteByte(' ')
	b.WriteString(fieldRef(mediaType(r.ContentType)))
	return b.String()
}

func squidURLRef(r *Record) string {
	if r.Target == "" {
		return ""
	}
	if r.tunnel() || r.Scheme == "" {
		return r.Target
	}
	host := r.Target
	if h, p, err := net.SplitHostPort(r.Target); err == nil && (r.Scheme == "http" && p == "80" || r.Scheme == "https" && p == "443") {
		host = h
		if strings.Contains(h, ":") {
			host = "[" + h + "]"
		}
	}
	path := r.Path
	if path == "" {
		path = "/"
	}
	return r.Scheme + "://" + host + path
}

func hierarchyRef(r *Record) string {
	member := r.Route[strings.LastIndexByte(r.Route, '/')+1:]
	direct := member == "direct" || member == ""
	dialed := r.Decided && r.Verdict == "allow" &&
		(!direct || r.Status != 0 && r.Status < 500 || r.Granted || r.Peer.IsValid())
	switch {
	case !dialed:
		return "HIER_NONE/-"
	case direct:
		if r.Peer.IsValid() {
			return "HIER_DIRECT/" + r.Peer.String()
		}
		host, _, err := net.SplitHostPort(r.Target)
		if err != nil {
			host = r.Target
		}
		return "HIER_DIRECT/" + fieldRef(host)
	}
	return "FIRSTUP_PARENT/" + fieldRef(member)
}

func clientIPRef(addr string) string {
	if ap, err := netip.ParseAddrPort(addr); err == nil {
		return ap.Addr().Unmap().String()
	}
	return addr
}

// field makes s one whitespace-free field: "-" when empty, spaces and
// control characters percent-encoded (as Squid does), so that a client's
// text never shifts the fields after it.
func fieldRef(s string) string {
	if s == "" {
		return "-"
	}
	clean := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c == 0x7f || c == '%' {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c == 0x7f || c == '%' {
			b.WriteString("%" + strings.ToUpper(hex2(int(c))))
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// TestSquidMatchesReference: Squid's line, appended to a buffer, is the
// reference's byte for byte, for random records (odd strings, peers with
// and without zones, mapped clients, every scheme and port).
func TestSquidMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	pick := func(xs ...string) string { return xs[rng.IntN(len(xs))] }
	for i := range 3000 {
		r := randomRecord(rng)
		r.Start = time.UnixMilli(rng.Int64N(4e12))
		r.Duration = time.Duration(rng.Int64N(1e13))
		r.Method = pick("", "CONNECT", "GET", "PO ST", r.Method)
		r.Client = pick("127.0.0.1:5", "[::ffff:10.1.2.3]:9", "[fe80::1%eth 0]:7", "[::1]:80", r.Client)
		r.Target = pick("a.test:80", "a.test:443", "[::1]:80", "[fe80::2]:443", "b.test:8080", "", r.Target)
		r.Scheme = pick("", "http", "https", "ws s")
		r.Route = pick("", "direct", "pool/direct", "pool/office", "up stream", r.Route)
		r.Verdict = pick("allow", "block", r.Verdict)
		r.ContentType = pick("", "text/html; charset=utf-8", " a b/c ;x", r.ContentType)
		r.Granted = rng.IntN(2) == 0
		r.Status = pick2(rng, 0, 200, 407, 502, rng.IntN(1000))
		if rng.IntN(3) == 0 {
			r.Peer = netip.MustParseAddr(pick("::1", "127.0.0.9", "fe80::3%en0"))
		}
		if got, want := Squid(r), squidRef(r); got != want {
			t.Fatalf("record %d %+v:\n got %q\nwant %q", i, r, got, want)
		}
	}
}

func pick2(rng *rand.Rand, xs ...int) int { return xs[rng.IntN(len(xs))] }
