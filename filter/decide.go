package filter

// Deciding a request: the index walk over a host's suffixes, the IP
// patterns, and each rule's conditions.

import (
	"math/bits"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/sluiceproxy/sluice/rules"
)

// Decide returns the decision for req. It is pure: no I/O, no clock (it
// reads req.Time), no allocation. An empty host is blocked with
// ReasonInvalid. The Via of an allowed decision is the rule's route, else
// the configured default route; a blocked decision has none.
func (e *Engine) Decide(req Request) (d Decision) {
	o := e.decide(&req)
	// The Decision is made here, in the result, not copied out of a
	// function that returns it: it is thirty words.
	switch o.rule {
	case noRule:
		d = e.dflt
	case invalid:
		d.Reason = ReasonInvalid
	default:
		r := &e.rules[o.rule]
		d.Verdict, d.Reason, d.Rule = r.verdict, r.reason, r.ref
		if o.info != nil {
			o.text, o.named = o.info.text, true
			d.Category = o.info.category
		}
		if o.named {
			d.Rule.Pattern = o.text
		}
		if d.Verdict == Allow {
			d.Via = r.via
			if r.enforce != nil && o.named {
				d.Enforce = r.enforce[o.text]
			}
		}
	}
	if e.report != nil && d.Verdict == Allow {
		if ro := e.report.decide(&req); ro.rule != noRule && ro.rule != invalid &&
			e.report.rules[ro.rule].verdict == Block && e.reported[e.report.rules[ro.rule].ref.Index] {
			d.WouldBlock, d.Report = true, e.report.decision(ro).Rule
		}
	}
	return d
}

// outcome is what decide found: the rule that decides (noRule: none, the
// default applies; invalid: the host is empty) and its pattern: info, or,
// for a pattern of a rule name (namePat), only its text as written (named),
// taken from Engine.globText without reading it; neither for a rule
// without destinations. It is a few words, where a Decision is thirty: the
// Decision is made once, in Decide's result, not copied out of each
// function that returns it.
type outcome struct {
	rule  uint32
	named bool
	info  *patInfo
	text  string
}

// invalid is the rule number of the outcome for an empty host.
const invalid = noRule - 1

// decision returns the Decision of o.
func (e *Engine) decision(o outcome) Decision {
	switch o.rule {
	case noRule:
		return e.dflt
	case invalid:
		return Decision{Verdict: Block, Reason: ReasonInvalid}
	}
	if o.info == nil && o.named {
		info := patInfo{text: o.text}
		return e.rules[o.rule].decision(&info)
	}
	return e.rules[o.rule].decision(o.info)
}

// decide is Decide without the report-only rules, and without making the
// Decision.
func (e *Engine) decide(req *Request) outcome {
	host := req.Host
	if host == "" {
		return outcome{rule: invalid}
	}
	// The best candidate so far: the first (rule, pattern) in order whose
	// destination matched and whose rule's conditions hold. Candidates are
	// offered as they are found, in no order, so none need be kept; one
	// that comes after the best is not even matched.
	d := decider{e: e, req: req, best: atom{rule: noRule}}
	var bb, ab [catBuf]uint16
	blocked, excepted := bb[:0], ab[:0]

	// An IP literal is parsed only when its last label could be one: a
	// domain's starts with a letter (or is punycode "xn--"), an IPv4
	// address's with a digit, and an IPv6 address has colons (and a dot
	// only before an IPv4 address at its end, whose last label is digits).
	dots := dotMask(host) // valid when len(host) <= 64
	i := lastDot(host, dots, len(host))
	var ip netip.Addr
	isIP := false
	if tld := host[i+1:]; tld != "" && (tld[0]-'0' <= 9 || host[0] == '[' || i < 0 && strings.IndexByte(tld, ':') >= 0) {
		ip, isIP = parseIP(host)
	}

	// The suffix walk: the label suffixes of the host, right to left
	// ("com", "example.com", "b.example.com", ...), hashed incrementally
	// (see step). The suffixes below the first one that is not heavy share
	// their base (see keyBase), so one block of the prefilter and one home
	// slot in each index: the first lookup there pays the cache miss, the
	// others find the line in cache. A suffix that the prefilter says is
	// not a key is not looked up: most hosts that no category lists read
	// only the prefilter, which holds the keys of both indexes (those of
	// the rule index as nameKey), so one line of it answers for both.
	cw, nw := e.cats.words, e.names.words
	k0, k1 := e.hk.k0, e.hk.k1
	h, labels, end := uint64(0), 0, len(host)
	heavy := true // every suffix so far (but the top label) is heavy
	var cpos, npos uint64
	var blk *bloomBlock
	var names bool // blk may hold keys of the rule index
	// An IP literal has no key to find when no key of either index could
	// be one of its suffixes (see Engine.numeric), as in most rule sets:
	// its walk, which reads a line of the prefilter, is skipped.
	for walk := !isIP || e.numeric; walk; {
		// h = step(&e.hk, h, label), written out for labels of up to 16
		// bytes, as nearly all are: step is too big for the compiler to
		// inline, and a call for each label spills the walk's state.
		if label := host[i+1 : end]; len(label) > 16 {
			h = step(&e.hk, h, label)
		} else {
			n := len(label)
			seed := h ^ mix(h^k0, k1)
			var a, b uint64
			switch {
			case n >= 8:
				a, b = load64(label), load64(label[n-8:])
			case n >= 4:
				a, b = load32(label), load32(label[n-4:])
			case n > 0:
				a = uint64(label[0])<<16 | uint64(label[n>>1])<<8 | uint64(label[n-1])
			}
			a, b = bits.Mul64(a^k1, b^seed)
			if h = mix(a^k0^uint64(n), b^k1); h == 0 {
				h = 1
			}
		}
		labels++
		if labels == 1 && !e.top.has(h) {
			// No key is this top-level label alone ("com"), as most
			// rule sets have none: it need not be tested, nor its block
			// of the prefilter read. (The suffixes below have their own.)
			goto next
		}
		if heavy {
			bi := e.pre.blockOf(h)
			blk, names = e.pre.at(bi), e.pre.hasNames(bi)
			cpos, npos = e.cats.start(h), e.names.start(h)
			if labels >= 2 && !isIP {
				// The index line of a listed host is read below only
				// once the prefilter's answer is in; ask for it now, so
				// that the two cache misses overlap. Not for a top-level
				// label, which many hosts share, so mostly in cache, nor
				// for an IP literal, whose only key is itself.
				prefetch(&cw[cpos])
			}
			if names {
				prefetch(&nw[npos]) // the same for the rule index
			}
			if labels >= 2 && !e.heavy.has(h) {
				heavy = false
			}
		}
		if off := i + 1; off < len(host) { // not the empty suffix after a final dot
			// An IP literal has no parent domains.
			if (off == 0 || !isIP) && blk.has(h) {
				if v, ok := e.cats.getFrom(h, cpos, cw[cpos]); ok {
					n := &e.catNodes[v]
					if len(n.cats) > 0 {
						blocked = append(blocked, n.cats...)
					}
					if len(n.allows) > 0 {
						excepted = append(excepted, n.allows...)
					}
				}
			}
			// The rule index's key in the same block of the prefilter:
			// blk.has(nameKey(h)).
			if names && blk.has(h^e.hk.k2) {
				if v, ok := e.names.getFrom(h, npos, nw[npos]); ok {
					d.patterns(v, host, off, isIP)
				}
			}
		}
	next:
		if i < 0 {
			break
		}
		end = i
		i = lastDot(host, dots, end)
	}
	// A glob matches only hosts that start with its literal prefix: most
	// hosts can skip the loose ones at once.
	if c := host[0]; e.looseAt[c>>6]>>(c&63)&1 != 0 {
		hw := head(host)
		for gi := range e.loose {
			if k := &e.looseKey[gi]; hw&k.mask != k.word {
				continue
			}
			if g := &e.loose[gi]; less(g.at, d.best) && g.match(e, host, -1) && d.offer(g.at) {
				d.name(g)
			}
		}
	}
	if isIP {
		for i := range e.cidrs {
			if c := &e.cidrs[i]; less(c.at, d.best) && c.prefix.Contains(ip) {
				d.offer(c.at) // its pattern is read from its rule (named false)
			}
		}
	}
	for k, c := range blocked {
		if slices.Contains(excepted, c) || slices.Contains(blocked[:k], c) {
			continue
		}
		for _, at := range e.catRefs[c] {
			d.offer(at)
		}
	}
	// The rules without destinations compete by their order alone.
	for _, ri := range e.anyDest {
		if ri >= d.best.rule {
			break
		}
		if r := &e.rules[ri]; r.admits(req) {
			return outcome{rule: ri}
		}
	}
	if d.best.rule == noRule {
		return outcome{rule: noRule}
	}
	if d.named && d.text != nil {
		if t, ok := d.text.writtenText(e); ok {
			return outcome{rule: d.best.rule, named: true, text: t}
		}
	}
	return outcome{rule: d.best.rule, info: &e.rules[d.best.rule].pats[d.best.pat]}
}

// dotMask returns the positions of the dots of host, a bit for each byte,
// when host is at most 64 bytes long, as most are: the dots of eight bytes
// are found at once, without a branch for each byte. A longer host gets
// 0, and lastDot looks for its dots one by one.
func dotMask(host string) uint64 {
	n := len(host)
	if n > 64 {
		return 0
	}
	var m uint64
	off := 0
	for ; off+8 <= n; off += 8 {
		m |= dots8(load64(host[off:])) << off
	}
	switch rest := n - off; {
	case rest == 0:
	case n >= 8: // the last eight bytes, of which the first 8-rest are done
		m |= dots8(load64(host[n-8:])) >> (8 - rest) << off
	default:
		m = dots8(head(host)) // zeros past the end are not dots
	}
	return m
}

// dots8 returns a bit for each byte of w (little-endian) that is a dot:
// bit i for byte i. The high bit of each byte of t is set where the byte
// of w equals '.', exactly (no carry crosses a byte: each byte is at most
// 0x7f + 0x7f); the multiply gathers the eight high bits into the top
// byte, each partial product landing on a bit of its own.
func dots8(w uint64) uint64 {
	const lo7, hi1 = 0x7f7f7f7f7f7f7f7f, 0x8080808080808080
	x := w ^ 0x2e2e2e2e2e2e2e2e // '.' bytes become 0
	t := ^((x&lo7 + lo7) | x) & hi1
	return (t >> 7) * 0x0102040810204080 >> 56
}

// lastDot returns the index of the last dot in host[:end], or -1: from
// dots, the dotMask of host, when host is at most 64 bytes long.
func lastDot(host string, dots uint64, end int) int {
	if len(host) > 64 {
		return strings.LastIndexByte(host[:end], '.')
	}
	return 63 - bits.LeadingZeros64(dots&(1<<uint(end)-1))
}

// decider is the state of one decision that its helpers share; it lives on
// Decide's stack.
type decider struct {
	e    *Engine
	req  *Request
	best atom // the first candidate whose conditions hold; rule noRule: none
	// named is set when best is a pattern of a rule name, text: the
	// namePat whose text the Decision takes.
	named bool
	text  *namePat
}

// name notes that the best candidate, just offered, is the namePat g.
func (d *decider) name(g *namePat) { d.named, d.text = true, g }

// offer makes at the best candidate if it comes before it and its rule's
// conditions hold, and reports whether it did.
func (d *decider) offer(at atom) bool {
	if less(at, d.best) && d.e.rules[at.rule].admits(d.req) {
		d.best, d.named = at, false
		return true
	}
	return false
}

// patterns offers the rule patterns of the name host[off:], the run of
// Engine.namePats from first, that match host. The name's second hash is
// compared, so that a collision of the index's cannot fake a pattern, only
// once a pattern would be offered.
func (d *decider) patterns(first uint32, host string, off int, isIP bool) {
	verified := false
	pats := d.e.namePats[first:]
	for i := range pats {
		p := &pats[i]
		if i > 0 && pats[i-1].last {
			return
		}
		if !less(p.at, d.best) {
			continue
		}
		switch p.kind {
		case patExact:
			if off != 0 {
				continue
			}
		case patSuffix:
			if off != 0 && isIP { // an IP literal has no parent domains
				continue
			}
		default:
			if !p.match(d.e, host, off) {
				continue
			}
		}
		if !verified {
			if checkHash(d.e.seed2, host[off:]) != pats[0].check {
				return
			}
			verified = true
		}
		if d.offer(p.at) {
			d.name(p)
		}
	}
}

func less(x, y atom) bool { return x.rule < y.rule || x.rule == y.rule && x.pat < y.pat }

// parseIP returns the address of an IP literal host, unmapped, brackets
// and all.
func parseIP(h string) (netip.Addr, bool) {
	h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	a, err := netip.ParseAddr(h)
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

// decision is the rule's answer; pat is the matching pattern, or nil.
func (r *rule) decision(pat *patInfo) Decision {
	d := Decision{Verdict: r.verdict, Reason: r.reason, Rule: r.ref}
	if pat != nil {
		d.Rule.Pattern = pat.text
		d.Category = pat.category
	}
	if d.Verdict == Allow {
		d.Via = r.via
		if r.enforce != nil && pat != nil {
			d.Enforce = r.enforce[pat.text]
		}
	}
	return d
}

// admits reports whether every condition of the rule holds for req.
func (r *rule) admits(req *Request) bool {
	return !r.hasConds || r.conds(req)
}

// conds is admits for a rule with conditions.
func (r *rule) conds(req *Request) bool {
	if len(r.clients) > 0 {
		client := req.Client.Unmap()
		if !client.IsValid() || !containsAddr(r.clients, client) {
			return false
		}
	}
	if len(r.ports) > 0 && !containsPort(r.ports, req.Port) {
		return false
	}
	if r.users != nil {
		if _, ok := r.users[req.User]; !ok {
			return false
		}
	}
	if r.hasGroups && !r.inGroups(req) {
		return false
	}
	if len(r.times) > 0 && !inWindows(r.times, req.Time) {
		return false
	}
	return true
}

// inGroups reports whether the request's user is listed in one of the
// rule's groups or holds one of them as a directory group.
func (r *rule) inGroups(req *Request) bool {
	if _, ok := r.groups[req.User]; ok {
		return true
	}
	for _, g := range req.Groups {
		if _, ok := r.groupSet[g]; ok {
			return true
		}
	}
	return false
}

func containsAddr(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func containsPort(rs []rules.PortRange, p uint16) bool {
	for _, r := range rs {
		if r.Lo <= p && p <= r.Hi {
			return true
		}
	}
	return false
}

// inWindows reports whether t falls in one of the weekly windows, in t's
// own location. The zero time is in none. A window is [From, To) in
// minutes; one with To < From wraps past midnight and belongs to the day
// it starts on (as rules.TimeWindow.Contains has it).
func inWindows(ws []rules.TimeWindow, t time.Time) bool {
	if t.IsZero() {
		return false
	}
	hh, mm, _ := t.Clock()
	m := hh*60 + mm
	day := t.Weekday()
	for _, w := range ws {
		switch {
		case w.From <= w.To:
			if hasDay(w, day) && w.From <= m && m < w.To {
				return true
			}
		case m >= w.From:
			if hasDay(w, day) {
				return true
			}
		case m < w.To:
			if hasDay(w, (day+6)%7) { // started the day before
				return true
			}
		}
	}
	return false
}

func hasDay(w rules.TimeWindow, d time.Weekday) bool { return w.Days == 0 || w.Days&(1<<d) != 0 }
