package rules

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
)

// List formats, as reported in ListStats.Format and SourceStats.Format.
const (
	FormatPlain    = "plain"    // one domain a line
	FormatHosts    = "hosts"    // "0.0.0.0 a.com b.com"
	FormatAdblock  = "adblock"  // "||a.com^", "@@||b.com^"
	FormatDnsmasq  = "dnsmasq"  // "address=/a.com/0.0.0.0", "server=/a.com/", "local=/a.com/"
	FormatWildcard = "wildcard" // "*.a.com" a line, as HaGeZi and OISD publish
)

// formatNames maps the names a source's format: accepts to the formats;
// "domains" is what list authors call the plain format.
var formatNames = map[string]string{
	FormatPlain: FormatPlain, "domains": FormatPlain, FormatHosts: FormatHosts,
	FormatAdblock: FormatAdblock, FormatDnsmasq: FormatDnsmasq, FormatWildcard: FormatWildcard,
}

// ParseFormat returns the format a name stands for: adblock, hosts,
// domains (or plain), dnsmasq or wildcard, in any case.
func ParseFormat(name string) (string, error) {
	if f, ok := formatNames[strings.ToLower(strings.TrimSpace(name))]; ok {
		return f, nil
	}
	return "", fmt.Errorf("unknown list format %q (want adblock, hosts, domains, wildcard or dnsmasq)", name)
}

// List parsing limits.
const (
	// MaxListErrors is how many invalid lines a list keeps as errors.
	MaxListErrors = 5
	// maxInvalidLines is the count of invalid lines after which a list that
	// has more invalid lines than valid ones is abandoned.
	maxInvalidLines = 1000
	// maxLineLen is the longest line read; a longer one ends the parse.
	maxLineLen = 1 << 20
)

// ErrNotAList means a file had so many invalid lines that it is probably not
// a list in a format Sluice reads.
var ErrNotAList = errors.New("too many invalid lines: not a list in a known format (domains, wildcard, hosts, adblock, dnsmasq)")

// Entry is one domain taken from a list file.
type Entry struct {
	// Domain is normalized by NormalizeHost.
	Domain string
	// Allow marks an exception (Adblock "@@||x^"): the domain and its
	// subdomains are taken out of the category.
	Allow bool
	// Line is the line of the file it came from, counting from 1.
	Line int
}

// ListStats reports what ParseList read.
type ListStats struct {
	// Format is the format read: the one given, or the one detected.
	Format string
	// Lines counts the lines read.
	Lines int
	// Entries counts the entries passed to the callback.
	Entries int
	// Skipped counts valid lines that are of no use here: cosmetic and URL
	// rules, localhost names in hosts files, dnsmasq options.
	Skipped int
	// Invalid counts lines that could not be parsed.
	Invalid int
	// Errors holds the first MaxListErrors invalid lines as *ParseError.
	Errors []error
}

// localNames are names in hosts files that point at the machine itself and
// are not blocklist entries.
var localNames = map[string]bool{
	"localhost": true, "localhost.localdomain": true, "local": true, "broadcasthost": true,
	"ip6-localhost": true, "ip6-loopback": true, "ip6-localnet": true, "ip6-mcastprefix": true,
	"ip6-allnodes": true, "ip6-allrouters": true, "ip6-allhosts": true, "0.0.0.0": true,
}

var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

// ParseList reads a list of domains from r, calling fn for every entry in
// file order, in the format DetectFormat finds. See ParseListFormat.
func ParseList(r io.Reader, file string, fn func(Entry)) (ListStats, error) {
	return ParseListFormat(r, file, "", fn)
}

// ParseListFormat reads a list of domains in format from r, calling fn for
// every entry in file order. file names the source in errors. An empty
// format is detected over the whole of r (see DetectFormat), which is read
// twice: once to decide, once to parse; r is buffered in memory when it
// cannot seek. The formats: plain domains, "*.domain" wildcards, hosts
// file lines (localhost names skipped), Adblock network rules ("||a.com^",
// "@@" exceptions as Allow entries; cosmetic rules, URL and path rules and
// rules whose options narrow them to some requests skipped), or dnsmasq
// "address=/a.com/…", "server=/a.com/…" and "local=/a.com/". A BOM, CRLF line ends,
// surrounding spaces and '#' comments (and '!' in Adblock lists) are ignored;
// domains are normalized with NormalizeHost, and a leading "*." or "." is
// dropped since every entry covers its subdomains anyway.
//
// Invalid lines are counted and the first few kept in ListStats.Errors; they
// are never fatal. Only after 1000 invalid lines, when they outnumber the
// valid ones, does ParseListFormat stop, with an error wrapping ErrNotAList. A read
// error also stops it. The entries passed to fn before an error stand.
func ParseListFormat(r io.Reader, file, format string, fn func(Entry)) (ListStats, error) {
	lp := &listParser{file: file, fn: fn}
	if format == "" {
		rs, ok := r.(io.ReadSeeker)
		var start int64
		var err error
		if ok {
			start, err = rs.Seek(0, io.SeekCurrent)
		}
		if !ok || err != nil {
			data, err := io.ReadAll(r)
			if err != nil {
				return lp.st, &ParseError{File: file, Line: 1, Err: fmt.Errorf("read: %w", err)}
			}
			rs, start = bytes.NewReader(data), 0
		}
		if format, err = DetectFormat(rs, file); err != nil {
			return lp.st, err
		}
		if _, err := rs.Seek(start, io.SeekStart); err != nil {
			return lp.st, &ParseError{File: file, Line: 1, Err: fmt.Errorf("read: %w", err)}
		}
		r = rs
	} else {
		f, err := ParseFormat(format)
		if err != nil {
			return lp.st, &ParseError{File: file, Line: 1, Err: err}
		}
		format = f
	}
	lp.st.Format = format
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxLineLen)
	for sc.Scan() {
		if err := lp.line(sc.Bytes()); err != nil {
			return lp.st, err
		}
	}
	if err := sc.Err(); err != nil {
		return lp.st, &ParseError{File: file, Line: lp.st.Lines + 1, Err: fmt.Errorf("read: %w", err)}
	}
	return lp.st, nil
}

// adblockHeaders start the first line of an Adblock-syntax filter list.
var adblockHeaders = []string{"[adblock", "[ublock", "[adguard"}

// DetectFormat reads r to its end and returns the format of the list it
// holds. A "[Adblock Plus 2.0]" header (or uBlock's, AdGuard's) as the first
// meaningful line decides at once; otherwise every line votes for the format
// it is written in, and the most votes win (plain when nothing votes): the
// head of a list alone misleads, since EasyList's first thousand lines are
// comments, cosmetic and path rules. A read error is returned as a
// *ParseError naming file.
func DetectFormat(r io.Reader, file string) (string, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxLineLen)
	votes := map[string]int{}
	n, first := 0, true
	for sc.Scan() {
		n++
		l := clean(sc.Bytes(), n == 1)
		if len(l) == 0 {
			continue
		}
		if first {
			first = false
			low := bytes.ToLower(l)
			for _, h := range adblockHeaders {
				if bytes.HasPrefix(low, []byte(h)) {
					return FormatAdblock, nil
				}
			}
		}
		if f := classify(l); f != "" {
			votes[f]++
		}
	}
	if err := sc.Err(); err != nil {
		return "", &ParseError{File: file, Line: n + 1, Err: fmt.Errorf("read: %w", err)}
	}
	format, best := FormatPlain, 0
	for _, f := range []string{FormatAdblock, FormatHosts, FormatDnsmasq, FormatWildcard, FormatPlain} {
		if votes[f] > best {
			format, best = f, votes[f]
		}
	}
	return format, nil
}

// clean trims a line: BOM on the first line, spaces, CR.
func clean(line []byte, first bool) []byte {
	if first {
		line = bytes.TrimPrefix(line, utf8BOM)
	}
	return bytes.TrimSpace(line)
}

// classify guesses the format of one trimmed line; "" for blank and comment lines.
func classify(l []byte) string {
	switch {
	case len(l) == 0:
		return ""
	case l[0] == '!', l[0] == '[', bytes.HasPrefix(l, []byte("||")), bytes.HasPrefix(l, []byte("@@")),
		isCosmetic(l):
		return FormatAdblock
	case l[0] == '#':
		return ""
	case bytes.HasPrefix(l, []byte("address=/")), bytes.HasPrefix(l, []byte("server=/")),
		bytes.HasPrefix(l, []byte("local=/")):
		return FormatDnsmasq
	}
	l = stripComment(l)
	if len(l) == 0 {
		return ""
	}
	if i := bytes.IndexAny(l, " \t"); i >= 0 { // several fields: a hosts line or nothing
		if isIP(l[:i]) {
			return FormatHosts
		}
		return ""
	}
	switch {
	case bytes.HasPrefix(l, []byte("*.")):
		return FormatWildcard
	case bytes.ContainsAny(l, "|^$/*=?&"), l[0] == '-', l[0] == '_' && !bytes.Contains(l, []byte(".")):
		return FormatAdblock // a URL, path or substring rule: "/ads/", "-ad-banner-", "&ad_type="
	}
	return FormatPlain
}

func isCosmetic(l []byte) bool {
	for _, sep := range []string{"##", "#@#", "#?#", "#$#", "#%#"} {
		if bytes.Contains(l, []byte(sep)) {
			return true
		}
	}
	return false
}

func isIP(b []byte) bool {
	_, err := netip.ParseAddr(string(b))
	return err == nil
}

func stripComment(l []byte) []byte {
	if i := bytes.IndexByte(l, '#'); i >= 0 {
		l = bytes.TrimSpace(l[:i])
	}
	return l
}

// listParser holds the state of one ParseList.
type listParser struct {
	file string
	fn   func(Entry)
	st   ListStats
}

func (lp *listParser) line(raw []byte) error {
	lp.st.Lines++
	l := clean(raw, lp.st.Lines == 1)
	if len(l) == 0 {
		return nil
	}
	switch lp.st.Format {
	case FormatAdblock:
		lp.adblock(l)
	case FormatDnsmasq:
		lp.dnsmasq(l)
	default: // plain and hosts read the same lines, leniently
		lp.hostsOrPlain(l)
	}
	if lp.st.Invalid >= maxInvalidLines && lp.st.Invalid > lp.st.Entries+lp.st.Skipped {
		return &ParseError{File: lp.file, Line: lp.st.Lines, Err: fmt.Errorf("%w: %d of %d lines", ErrNotAList, lp.st.Invalid, lp.st.Lines)}
	}
	return nil
}

// domain normalizes one token and passes it on, or counts it invalid.
func (lp *listParser) domain(tok []byte, allow bool) {
	tok = bytes.TrimPrefix(tok, []byte("*."))
	tok = bytes.TrimPrefix(tok, []byte("."))
	h, err := NormalizeHost(string(tok))
	if err != nil {
		lp.invalid(fmt.Errorf("invalid domain %q", short(tok)))
		return
	}
	lp.st.Entries++
	lp.fn(Entry{Domain: h, Allow: allow, Line: lp.st.Lines})
}

func (lp *listParser) invalid(err error) {
	lp.st.Invalid++
	if len(lp.st.Errors) < MaxListErrors {
		lp.st.Errors = append(lp.st.Errors, &ParseError{File: lp.file, Line: lp.st.Lines, Err: err})
	}
}

func (lp *listParser) hostsOrPlain(l []byte) {
	if l[0] == '#' || l[0] == ';' {
		return
	}
	l = stripComment(l)
	f := bytes.Fields(l)
	switch {
	case len(f) == 0:
		return
	case isIP(f[0]) && len(f) == 1 && lp.st.Format == FormatHosts:
		lp.invalid(fmt.Errorf("hosts line without a name: %q", short(l)))
	case isIP(f[0]) && len(f) > 1:
		for _, name := range f[1:] {
			if localNames[string(bytes.ToLower(name))] || isIP(name) {
				lp.st.Skipped++
				continue
			}
			lp.domain(name, false)
		}
	case len(f) == 1:
		lp.domain(f[0], false)
	default:
		lp.invalid(fmt.Errorf("want one domain a line, got %q", short(l)))
	}
}

func (lp *listParser) adblock(l []byte) {
	switch {
	case l[0] == '!', l[0] == '[':
		return // comment, header
	case isCosmetic(l):
		lp.st.Skipped++
		return
	case l[0] == '#':
		return
	}
	allow := false
	if rest, ok := bytes.CutPrefix(l, []byte("@@")); ok {
		allow, l = true, rest
	}
	if i := bytes.IndexByte(l, '$'); i >= 0 {
		if !wholeHost(l[i+1:]) {
			lp.st.Skipped++ // the rule applies to some requests only
			return
		}
		l = l[:i]
	}
	rest, anchored := bytes.CutPrefix(l, []byte("||"))
	if !anchored {
		l = bytes.TrimPrefix(l, []byte("*."))
		if bareDomain(l) {
			lp.domain(l, allow) // a bare domain, as in AdGuard DNS lists
			return
		}
		lp.st.Skipped++ // a URL or substring rule
		return
	}
	rest = bytes.TrimSuffix(rest, []byte("|"))
	rest = bytes.TrimSuffix(rest, []byte("^"))
	rest = bytes.TrimPrefix(rest, []byte("*."))
	if len(rest) == 0 || bytes.IndexAny(rest, "/^*:?=&|") >= 0 {
		lp.st.Skipped++ // a path or wildcard rule
		return
	}
	lp.domain(rest, allow)
}

// bareDomain tells whether an unanchored Adblock rule is a domain name
// rather than a substring such as "-ad-unit." or "_metrics.": at least two
// labels, none empty or starting or ending with '-', and a valid host.
func bareDomain(l []byte) bool {
	l = bytes.TrimPrefix(l, []byte("."))
	if bytes.IndexByte(l, '.') < 0 || bytes.IndexAny(l, "|/*^:?=&") >= 0 {
		return false
	}
	for label := range bytes.SplitSeq(l, []byte(".")) {
		if len(label) == 0 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
	}
	_, err := NormalizeHost(string(l))
	return err == nil
}

// wholeHostOptions are the Adblock options that leave a rule about every
// request to its host, as a DNS filter reads it; any other option ("script",
// "domain=…", "generichide", "badfilter", "denyallow=…") narrows the rule,
// and a domain filter cannot apply it without blocking or, for an "@@"
// exception, allowing far more than the rule says.
var wholeHostOptions = map[string]bool{
	"third-party": true, "3p": true, "important": true, "all": true, "document": true, "doc": true, "match-case": true,
}

// wholeHost tells whether the options of an Adblock rule (the text after
// '$') keep it a rule about whole hosts.
func wholeHost(opts []byte) bool {
	for o := range bytes.SplitSeq(opts, []byte(",")) {
		if !wholeHostOptions[string(bytes.ToLower(bytes.TrimSpace(o)))] {
			return false
		}
	}
	return true
}

func (lp *listParser) dnsmasq(l []byte) {
	if l[0] == '#' {
		return
	}
	if i := bytes.Index(l, []byte(" #")); i >= 0 { // "/#/" means every domain, so only " #" starts a comment
		l = bytes.TrimSpace(l[:i])
	}
	key, val, ok := bytes.Cut(l, []byte("="))
	if !ok {
		if f := bytes.Fields(l); len(f) == 1 && !bytes.ContainsAny(l, "/") {
			lp.domain(f[0], false) // a bare domain among dnsmasq lines
		} else {
			lp.invalid(fmt.Errorf("not a dnsmasq line: %q", short(l)))
		}
		return
	}
	switch string(key) {
	case "address", "server", "local":
	default:
		lp.st.Skipped++ // another dnsmasq option
		return
	}
	if len(val) == 0 || val[0] != '/' {
		lp.st.Skipped++ // "server=1.1.1.1": no domain
		return
	}
	parts := bytes.Split(val[1:], []byte("/"))
	if len(parts) < 2 {
		lp.invalid(fmt.Errorf("dnsmasq line without a closing '/': %q", short(l)))
		return
	}
	for _, d := range parts[:len(parts)-1] {
		if len(d) == 0 || string(d) == "#" {
			lp.st.Skipped++
			continue
		}
		lp.domain(d, false)
	}
}

// short cuts a line for an error message.
func short(b []byte) string {
	const max = 80
	if len(b) > max {
		return string(b[:max]) + "…"
	}
	return string(b)
}
