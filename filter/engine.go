package filter

import (
	"errors"
	"fmt"
	"hash/maphash"
	"math"
	"net/netip"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gobwas/glob"

	"github.com/sluiceproxy/sluice/rules"
)

// The fixed phrases of Decision.Reason.
const (
	// ReasonBlocked is the reason of a decision taken by a block rule.
	ReasonBlocked = "blocked by rule"
	// ReasonAllowed is the reason of a decision taken by an allow rule.
	ReasonAllowed = "allowed by rule"
	// ReasonDefault is the reason when no rule matched and the default applied.
	ReasonDefault = "no rule matched"
	// ReasonInvalid is the reason when the destination is empty; it blocks.
	ReasonInvalid = "invalid destination"
)

// Engine is a compiled, immutable rule set. Its methods are safe for
// concurrent use. Build it with Compile.
//
// How Decide works: every exact, suffix and category domain and the literal
// suffix of every glob ("*.ads.example.com" -> "ads.example.com") are keys
// of one hash index (see index.go). Decide walks the label suffixes of the
// host once ("a.b.example.com", "b.example.com", "example.com", "com"),
// looks each up, and offers the (rule, pattern) pairs that match; the
// globs found on the way, the few globs with no literal suffix and, for an
// IP literal, the CIDR patterns are tried directly. The first pair in order
// (or rule without destinations) whose rule's conditions hold decides: it
// is kept as the pairs are offered, so none are collected or sorted, and a
// pattern after it is not even matched. A decision costs O(labels) and does
// not allocate.
type Engine struct {
	hk    hashKey      // the secret of the index keys: see step
	seed2 maphash.Seed // of node.check, independent of seed
	heavy hashSet      // the heavy suffixes: see keyBase
	pre   prefilter    // the index keys, in cache: see prefilter.go
	index *index
	nodes []node

	rules   []rule
	anyDest []uint32 // rules without destination patterns, in order

	catNames []string       // category id -> name
	catRefs  [][]atom       // category id -> the patterns that name it
	loose    []globAtom     // globs with no literal suffix: tried one by one
	looseAt  [4]uint64      // the first bytes of hosts a loose glob may match
	cidrs    []cidrAtom     // every CIDR pattern
	counts   map[string]int // category name -> entries, for Categories

	fallback Verdict
	dflt     Decision // the decision when no rule matches, made once
	via      string   // the default route: Config.Upstream

	// report decides as if the report-only rules enforced: a request this
	// engine allows and report blocks by one of the reported rules (by
	// index) would be blocked. Nil when no rule is report-only.
	report   *Engine
	reported map[int]bool
}

// atom names one destination pattern: rule position and pattern position,
// both counting from 0.
type atom struct{ rule, pat uint32 }

// node is what the index knows about one domain.
type node struct {
	// name is the domain that exact, suffix and globs belong to. It is ""
	// for the nodes shared by category domains.
	name string
	// check is a second hash of name, with a seed of its own (seed2), or 0
	// when name is "". Decide compares it on every hit, so that a
	// collision of the index's hash cannot fake a rule pattern, without
	// reading the name from memory: a false match needs both hashes to
	// agree, about 2^-(127-b) per lookup.
	check  uint64
	exact  []atom     // exact patterns for the name
	suffix []atom     // suffix patterns for the name
	globs  []globAtom // globs whose literal suffix is the name
	cats   []uint16   // categories listing the domain
	allows []uint16   // categories listing the domain as an exception
}

type globAtom struct {
	g      *glob.Pattern // nil for a simple glob (kind != globGeneral)
	kind   uint8
	dot    bool   // the suffix is "." + the name of the glob's node
	prefix string // the literal text before the first wildcard, checked first
	suffix string // for a simple glob, the literal text after its wildcard
	at     atom
}

// The kinds of glob: a simple glob is a literal prefix, one wildcard ("*",
// "**" or "?") and a literal suffix, as most are ("*.ads.example",
// "ads*.example", "**.example", "t?.example"). It is matched by comparing
// the prefix, the suffix and what lies between, without gobwas.
const (
	globGeneral = iota // anything else: gobwas matches it
	globStar           // "*": any run of bytes without a '.'
	globAny            // "**": any run of bytes
	globOne            // "?": exactly one character (rune), not '.'
)

// match reports whether the glob matches host, with the semantics of
// gobwas/glob compiled with the separator '.'. off is where the name of
// the glob's node starts in host (known to be there), or -1.
func (g *globAtom) match(host string, off int) bool {
	if len(host) < len(g.prefix)+len(g.suffix) ||
		g.prefix != "" && (host[0] != g.prefix[0] || !strings.HasPrefix(host, g.prefix)) {
		return false
	}
	switch g.kind {
	case globGeneral:
		return g.g.Match(host)
	case globOne:
		// As gobwas: the character is the rune decoded at its place (an
		// invalid byte is one), and the rest must be the suffix exactly.
		rest := host[len(g.prefix):]
		r, w := utf8.DecodeRuneInString(rest)
		return w > 0 && r != '.' && rest[w:] == g.suffix
	}
	if g.dot && off > 0 {
		// host[off:] is the node's name: the suffix is there if a dot is
		// before it. No need to read the suffix from memory.
		if host[off-1] != '.' {
			return false
		}
	} else if !strings.HasSuffix(host, g.suffix) {
		return false
	}
	return g.kind == globAny || strings.IndexByte(host[len(g.prefix):len(host)-len(g.suffix)], '.') < 0
}

// newGlobAtom prepares glob p, compiled as g, whose literal suffix is lit.
func newGlobAtom(p string, g *glob.Pattern, lit string) globAtom {
	if pre, kind, suf, ok := simpleGlob(p); ok {
		return globAtom{kind: kind, prefix: pre, suffix: suf,
			dot: lit != "" && len(suf) == len(lit)+1 && suf[0] == '.' && suf[1:] == lit}
	}
	ga := globAtom{g: g, prefix: p}
	if k := strings.IndexAny(p, globMeta); k >= 0 {
		ga.prefix = p[:k]
	}
	return ga
}

// simpleGlob splits a glob of the form literal-prefix, one of "*", "**" or
// "?", literal-suffix; ok is false for any other glob.
func simpleGlob(p string) (prefix string, kind uint8, suffix string, ok bool) {
	k := strings.IndexAny(p, globMeta)
	if k < 0 {
		return "", 0, "", false
	}
	prefix, rest := p[:k], p[k:]
	switch {
	case strings.HasPrefix(rest, "**"):
		kind, suffix = globAny, rest[2:]
	case rest[0] == '*':
		kind, suffix = globStar, rest[1:]
	case rest[0] == '?':
		kind, suffix = globOne, rest[1:]
	default:
		return "", 0, "", false
	}
	if suffix != "" && (suffix[0] == '*' || strings.ContainsAny(suffix, globMeta)) {
		return "", 0, "", false
	}
	return prefix, kind, suffix, true
}

type cidrAtom struct {
	prefix netip.Prefix
	at     atom
}

// rule is a compiled rules.Rule.
type rule struct {
	verdict Verdict
	reason  string
	ref     RuleRef // Pattern left empty
	via     string  // route when allowed: Rule.Via, else Config.Upstream
	pats    []patInfo
	enforce map[string]string // pattern text -> enforcement host (safesearch); nil for other rules

	clients   []netip.Prefix
	ports     []rules.PortRange
	users     map[string]struct{} // nil: any user
	groups    map[string]struct{} // members of the rule's groups; nil: no group condition
	groupSet  map[string]struct{} // the rule's group names, matched by Request.Groups
	hasGroups bool
	times     []rules.TimeWindow
	hasConds  bool // any of the conditions above: else admits is true
}

type patInfo struct {
	text     string // as written
	category string // the category name for a category pattern
}

// maxCompileTries bounds the seeds Compile tries when two rule names collide.
const maxCompileTries = 4

// errCollision means two different rule names got the same 64-bit hash; a
// new seed fixes it.
var errCollision = errors.New("filter: hash collision")

// Compile builds an Engine from a rule set. The set is not kept and may be
// dropped afterwards; only the hashes of category domains are. An error
// names the rule and the problem: an unknown action or pattern kind, a glob
// that does not compile, an invalid CIDR, or a default that is neither
// allow nor block. A category named by a rule but absent from the set is
// treated as empty.
//
// Report-only rules (mode: report) take no part in the decision: the
// engine decides without them, and, for a request it allows, asks a second
// engine compiled with them enforcing whether one of them would block.
// So a report-only rule never opens what a rule below it blocks.
func Compile(set *rules.Set) (*Engine, error) {
	if set == nil || set.Config == nil {
		return nil, errors.New("filter: nil rule set")
	}
	enforced, reporting, reported := splitReport(set)
	e, err := compileSeeded(enforced)
	if err != nil || reporting == nil {
		return e, err
	}
	if e.report, err = compileSeeded(reporting); err != nil {
		return nil, err
	}
	e.reported = reported
	return e, nil
}

// splitReport returns set without its report-only rules, and, when it has
// any, set with them enforcing and their indexes. The second set stops at
// the last report-only rule: the rules after it cannot change whether one
// of them is the first match, and their categories need no second copy.
func splitReport(set *rules.Set) (enforced, reporting *rules.Set, reported map[int]bool) {
	cfg := set.Config
	last := slices.IndexFunc(cfg.Rules, func(r rules.Rule) bool { return r.Report })
	if last < 0 {
		return set, nil, nil
	}
	for i, r := range cfg.Rules {
		if r.Report {
			last = i
		}
	}
	reported = map[int]bool{}
	var keep, all []rules.Rule
	for i, r := range cfg.Rules {
		if r.Index == 0 {
			r.Index = i + 1
		}
		if r.Report {
			reported[r.Index] = true
			r.Report = false
		} else {
			keep = append(keep, r)
		}
		if i <= last {
			all = append(all, r)
		}
	}
	ec, rc := *cfg, *cfg
	ec.Rules, rc.Rules = keep, all
	es, rs := *set, *set
	es.Config, rs.Config = &ec, &rc
	return &es, &rs, reported
}

func compileSeeded(set *rules.Set) (*Engine, error) {
	var err error
	for range maxCompileTries {
		var e *Engine
		e, err = compile(set, maphash.MakeSeed())
		if !errors.Is(err, errCollision) {
			return e, err
		}
	}
	return nil, err
}

// builder holds the state of one compilation.
type builder struct {
	e      *Engine
	set    *rules.Set
	catID  map[string]uint16
	single []uint32            // category id -> node holding only that category, or 0
	merged map[mergeKey]uint32 // node + category -> node with it too
	table  *buildTable
	names  []string // the names of exact, suffix and glob patterns
}

type mergeKey struct {
	node  uint32
	cat   uint16
	allow bool
}

func compile(set *rules.Set, seed maphash.Seed) (*Engine, error) {
	cfg := set.Config
	e := &Engine{hk: newHashKey(seed), seed2: maphash.MakeSeed(), via: cfg.Upstream, counts: map[string]int{}}
	switch cfg.Default {
	case "", rules.Allow:
		e.fallback = Allow
	case rules.Block:
		e.fallback = Block
	default:
		return nil, fmt.Errorf("filter: default %q is neither allow nor block", cfg.Default)
	}
	e.dflt = Decision{Verdict: e.fallback, Reason: ReasonDefault, Default: true}
	if e.fallback == Allow {
		e.dflt.Via = e.via
	}
	b := &builder{e: e, set: set, catID: map[string]uint16{}, merged: map[mergeKey]uint32{}}
	e.nodes = []node{{}} // node 0: the empty node of a fresh slot

	// Pass 1: the categories in use and the size of the index.
	keys := 0
	for _, r := range cfg.Rules {
		for _, p := range r.Dests {
			switch p.Kind {
			case rules.Category:
				if _, ok := b.catID[p.Host]; ok {
					continue
				}
				if len(e.catNames) == math.MaxUint16 {
					return nil, fmt.Errorf("filter: %s: more than %d categories", ruleName(cfg, r), math.MaxUint16)
				}
				b.catID[p.Host] = uint16(len(e.catNames))
				e.catNames = append(e.catNames, p.Host)
				if l := set.Categories[p.Host]; l != nil {
					keys += len(l.Block) + len(l.Allow)
				}
			case rules.Exact, rules.Suffix:
				keys++
				b.names = append(b.names, p.Host)
			case rules.Glob:
				keys++
				if lit := literalSuffix(p.Host); lit != "" {
					b.names = append(b.names, lit)
				}
			}
		}
	}
	for name, l := range set.Categories {
		if l != nil {
			e.counts[name] = len(l.Block) + len(l.Allow)
		}
	}
	e.catRefs = make([][]atom, len(e.catNames))
	b.single = make([]uint32, len(e.catNames))
	cats := make([]nameHash, 0, keys)
	b.forEachDomain(func(d string, _ uint16, _ bool) { cats = append(cats, e.hashName(d)) })
	b.findHeavy(cats)
	b.table = newBuildTable(keys)
	e.pre = newPrefilter(keys)

	// Category domains first, so that rule names can take their node over.
	k := 0
	b.forEachDomain(func(d string, id uint16, allow bool) {
		if n := cats[k]; n.labels > 0 {
			b.addCategory(n.key, e.base(n, d), id, allow)
		}
		k++
	})

	// Pass 2: the rules.
	for ri, r := range cfg.Rules {
		if err := b.addRule(ri, r); err != nil {
			return nil, err
		}
	}
	x, err := b.table.pack(len(e.nodes), b.merge)
	if err != nil {
		return nil, err
	}
	e.index = x
	b.packGlobs()
	return e, nil
}

// packGlobs moves the globs of all nodes into one array and their texts
// into one string: a few hundred kilobytes for ten thousand globs, that
// stay in cache, where Decide would otherwise follow a pointer to memory
// of its own for each node's globs and each glob's texts. It also notes
// the first bytes of the loose globs' literal prefixes (all bytes when one
// has none) in e.looseAt.
func (b *builder) packGlobs() {
	e := b.e
	n := len(e.loose)
	var text strings.Builder
	for i := range e.nodes {
		for _, g := range e.nodes[i].globs {
			n++
			text.WriteString(g.prefix)
			text.WriteString(g.suffix)
		}
	}
	for _, g := range e.loose {
		text.WriteString(g.prefix)
		text.WriteString(g.suffix)
	}
	all, off := text.String(), 0
	intern := func(g *globAtom) {
		g.prefix = all[off : off+len(g.prefix)]
		off += len(g.prefix)
		g.suffix = all[off : off+len(g.suffix)]
		off += len(g.suffix)
	}
	pool := make([]globAtom, 0, n)
	for i := range e.nodes {
		nd := &e.nodes[i]
		if len(nd.globs) == 0 {
			continue
		}
		start := len(pool)
		for _, g := range nd.globs {
			intern(&g)
			pool = append(pool, g)
		}
		nd.globs = pool[start:len(pool):len(pool)]
	}
	start := len(pool)
	for _, g := range e.loose {
		intern(&g)
		pool = append(pool, g)
	}
	e.loose = pool[start:len(pool):len(pool)]
	for _, g := range e.loose {
		if g.prefix == "" {
			e.looseAt = [4]uint64{^uint64(0), ^uint64(0), ^uint64(0), ^uint64(0)}
			break
		}
		c := g.prefix[0]
		e.looseAt[c>>6] |= 1 << (c & 63)
	}
}

// nameHash is what Compile computes of a category domain in one reading of
// the string (the domains are scattered in memory: each reading is a cache
// miss): its key and the hashes of its suffixes of two and three labels.
type nameHash struct {
	key, h2, h3 uint64
	labels      int // 0 for the empty name
}

func (e *Engine) hashName(d string) nameHash {
	if d == "" {
		return nameHash{}
	}
	var n nameHash
	h, end := uint64(0), len(d)
	for {
		i := strings.LastIndexByte(d[:end], '.')
		h = step(&e.hk, h, d[i+1:end])
		n.labels++
		switch n.labels {
		case 2:
			n.h2 = h
		case 3:
			n.h3 = h
		}
		if i < 0 {
			n.key = h
			return n
		}
		end = i
	}
}

// base returns the hash of the base of the domain d whose hashes are n, as
// Engine.keyBase does, reading d only for the rare domains below two heavy
// suffixes.
func (e *Engine) base(n nameHash, d string) uint64 {
	switch {
	case n.labels <= 2:
		return n.key
	case !e.heavy.has(n.h2):
		return n.h2
	case n.labels == 3 || !e.heavy.has(n.h3):
		return n.h3
	}
	_, b := e.keyBase(d)
	return b
}

// findHeavy finds the heavy suffixes of the keys of the index (see
// Engine.keyBase) and puts them in e.heavy, a level at a time: the
// suffixes of two labels with more than heavyMin keys below them, then,
// below those, the suffixes of three labels, and so on. cats are the
// hashes of the category domains, in the order of b.forEachDomain.
func (b *builder) findHeavy(cats []nameHash) {
	e := b.e
	var heavy []uint64
	hs := make([]uint64, 0, len(cats)+len(b.names))
	for level := 2; ; level++ {
		hs = hs[:0]
		// below adds the hash of the suffix of d with level labels, if d
		// has as many and its shorter suffixes (but the last label) are
		// heavy.
		below := func(d string) {
			h, j, end := uint64(0), 0, len(d)
			for {
				i := strings.LastIndexByte(d[:end], '.')
				h = step(&e.hk, h, d[i+1:end])
				j++
				if j == level {
					hs = append(hs, h)
					return
				}
				if i < 0 || j >= 2 && !e.heavy.has(h) {
					return
				}
				end = i
			}
		}
		switch level {
		case 2:
			for _, n := range cats {
				if n.labels >= 2 {
					hs = append(hs, n.h2)
				}
			}
		case 3:
			for _, n := range cats {
				if n.labels >= 3 && e.heavy.has(n.h2) {
					hs = append(hs, n.h3)
				}
			}
		default:
			k := 0
			b.forEachDomain(func(d string, _ uint16, _ bool) {
				if n := cats[k]; n.labels >= level && e.heavy.has(n.h2) && e.heavy.has(n.h3) {
					below(d)
				}
				k++
			})
		}
		for _, d := range b.names {
			below(d)
		}
		slices.Sort(hs)
		found := false
		for i := 0; i < len(hs); {
			j := i + 1
			for j < len(hs) && hs[j] == hs[i] {
				j++
			}
			if j-i > heavyMin {
				heavy = append(heavy, hs[i])
				found = true
			}
			i = j
		}
		if !found {
			return
		}
		e.heavy = newHashSet(heavy)
	}
}

// forEachDomain calls f with every category domain and exception, in a
// fixed order.
func (b *builder) forEachDomain(f func(d string, cat uint16, allow bool)) {
	for id, name := range b.e.catNames {
		l := b.set.Categories[name]
		if l == nil {
			continue
		}
		for _, d := range l.Block {
			f(d, uint16(id), false)
		}
		for _, d := range l.Allow {
			f(d, uint16(id), true)
		}
	}
}

// checkHash returns the second hash of a rule name, for node.check: never 0.
func checkHash(seed maphash.Seed, name string) uint64 {
	return maphash.String(seed, name) | 1
}

// merge returns a node for two domains whose hashes the index cannot tell
// apart: one that has both their categories. Rule patterns cannot be
// merged (their names differ); a new seed will part them.
func (b *builder) merge(x, y uint32) (uint32, error) {
	e := b.e
	n, m := &e.nodes[x], &e.nodes[y]
	if n.name != "" && m.name != "" {
		return 0, errCollision
	}
	if m.name != "" {
		n, m = m, n
	}
	u := *n
	u.cats, u.allows = union(n.cats, m.cats), union(n.allows, m.allows)
	v := uint32(len(e.nodes))
	e.nodes = append(e.nodes, u)
	return v, nil
}

// ruleName names a rule in errors: "rule 3 (sluice.yaml:12)".
func ruleName(cfg *rules.Config, r rules.Rule) string {
	return RuleRef{Index: r.Index, File: cfg.File, Line: r.Line}.String()
}

// addCategory records that the domain of key and base is in category id
// (as an exception when allow).
func (b *builder) addCategory(key, base uint64, id uint16, allow bool) {
	e := b.e
	s, fresh := b.slot(key, base)
	if fresh {
		if !allow {
			if b.single[id] == 0 {
				b.single[id] = uint32(len(e.nodes))
				e.nodes = append(e.nodes, node{cats: []uint16{id}})
			}
			s.val = b.single[id]
			return
		}
	}
	n := &e.nodes[s.val]
	list := n.cats
	if allow {
		list = n.allows
	}
	if slices.Contains(list, id) {
		return
	}
	k := mergeKey{node: s.val, cat: id, allow: allow}
	if v, ok := b.merged[k]; ok {
		s.val = v
		return
	}
	m := node{cats: slices.Clone(n.cats), allows: slices.Clone(n.allows)}
	if allow {
		m.allows = append(m.allows, id)
	} else {
		m.cats = append(m.cats, id)
	}
	v := uint32(len(e.nodes))
	e.nodes = append(e.nodes, m)
	b.merged[k] = v
	s.val = v
}

// slot returns the index slot for key (see buildTable.slot) and adds key
// to the prefilter.
func (b *builder) slot(key, base uint64) (s *buildSlot, fresh bool) {
	b.e.pre.add(key, base)
	return b.table.slot(key, base)
}

// own returns the id of the node that holds rule patterns for name, making
// it from the (shared) category node of the same hash when needed.
func (b *builder) own(name string) (uint32, error) {
	e := b.e
	s, _ := b.slot(e.keyBase(name))
	n := &e.nodes[s.val]
	switch n.name {
	case name:
		return s.val, nil
	case "":
	default:
		return 0, errCollision
	}
	v := uint32(len(e.nodes))
	e.nodes = append(e.nodes, node{name: name, check: checkHash(e.seed2, name),
		cats: slices.Clone(n.cats), allows: slices.Clone(n.allows)})
	s.val = v
	return v, nil
}

// addRule compiles rule number ri (from 0).
func (b *builder) addRule(ri int, r rules.Rule) error {
	e, cfg := b.e, b.set.Config
	index := r.Index
	if index == 0 {
		index = ri + 1
	}
	cr := rule{
		ref:   RuleRef{Index: index, Name: r.Name, File: cfg.File, Line: r.Line, Text: r.Text},
		ports: r.Ports,
		times: r.Times,
	}
	name := cr.ref.String()
	switch r.Action {
	case rules.Allow:
		cr.verdict, cr.reason = Allow, ReasonAllowed
	case rules.Block:
		cr.verdict, cr.reason = Block, ReasonBlocked
	default:
		return fmt.Errorf("filter: %s: action %q is neither allow nor block", name, r.Action)
	}
	cr.enforce = r.Enforce
	cr.via = r.Via
	if cr.via == "" {
		cr.via = cfg.Upstream
	}
	if len(r.Users) > 0 {
		cr.users = make(map[string]struct{}, len(r.Users))
		for _, u := range r.Users {
			if u != "" {
				cr.users[u] = struct{}{}
			}
		}
	}
	if len(r.Groups) > 0 {
		cr.hasGroups = true
		cr.groups = map[string]struct{}{}
		cr.groupSet = make(map[string]struct{}, len(r.Groups))
		for _, g := range r.Groups {
			cr.groupSet[g] = struct{}{}
			for _, u := range cfg.Groups[g] {
				if u != "" {
					cr.groups[u] = struct{}{}
				}
			}
		}
	}
	for i, p := range r.Clients {
		if i == 0 {
			cr.clients = make([]netip.Prefix, len(r.Clients))
		}
		if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
		}
		cr.clients[i] = p.Masked()
	}
	cr.hasConds = len(cr.clients) > 0 || len(cr.ports) > 0 || cr.users != nil || cr.hasGroups || len(cr.times) > 0
	if len(r.Dests) == 0 {
		e.anyDest = append(e.anyDest, uint32(ri))
	}
	for pi, p := range r.Dests {
		at := atom{rule: uint32(ri), pat: uint32(pi)}
		info := patInfo{text: p.Text}
		switch p.Kind {
		case rules.Exact, rules.Suffix:
			if p.Host == "" {
				return fmt.Errorf("filter: %s: empty host in pattern %q", name, p.Text)
			}
			id, err := b.own(p.Host)
			if err != nil {
				return err
			}
			n := &e.nodes[id]
			if p.Kind == rules.Exact {
				n.exact = append(n.exact, at)
			} else {
				n.suffix = append(n.suffix, at)
			}
		case rules.Glob:
			g, err := glob.Compile(p.Host, '.')
			if err != nil || p.Host == "" {
				return fmt.Errorf("filter: %s: invalid glob %q: %v", name, p.Text, err)
			}
			lit := literalSuffix(p.Host)
			ga := newGlobAtom(p.Host, g, lit)
			ga.at = at
			if lit == "" {
				e.loose = append(e.loose, ga)
				break
			}
			id, err := b.own(lit)
			if err != nil {
				return err
			}
			e.nodes[id].globs = append(e.nodes[id].globs, ga)
		case rules.Category:
			id := b.catID[p.Host]
			e.catRefs[id] = append(e.catRefs[id], at)
			info.category = p.Host
		case rules.CIDR:
			if !p.Prefix.IsValid() {
				return fmt.Errorf("filter: %s: invalid CIDR in pattern %q", name, p.Text)
			}
			pfx := p.Prefix
			if a := pfx.Addr(); a.Is4In6() && pfx.Bits() >= 96 {
				pfx = netip.PrefixFrom(a.Unmap(), pfx.Bits()-96)
			}
			e.cidrs = append(e.cidrs, cidrAtom{prefix: pfx.Masked(), at: at})
		default:
			return fmt.Errorf("filter: %s: pattern %q has unknown kind %v", name, p.Text, p.Kind)
		}
		cr.pats = append(cr.pats, info)
	}
	e.rules = append(e.rules, cr)
	return nil
}

// globMeta are the characters that are not literal in a glob.
const globMeta = `*?[]{}\`

// literalSuffix returns the labels of glob g after its last label with a
// wildcard: "*.ads.example.com" -> "ads.example.com", "ad*.x.com" -> "x.com",
// "ads.*" -> "". Every host that g matches ends with "." and that suffix,
// so the glob need only be tried on hosts that have it as a label suffix.
// Everything after the last meta character is literal; the cut at the
// first '.' after it keeps the suffix on a label boundary.
func literalSuffix(g string) string {
	k := strings.LastIndexAny(g, globMeta)
	if k < 0 {
		return g // no wildcard at all: the host itself
	}
	rest := g[k+1:]
	j := strings.IndexByte(rest, '.')
	if j < 0 {
		return ""
	}
	return rest[j+1:]
}

// Rules returns the number of rules, report-only ones included.
func (e *Engine) Rules() int { return len(e.rules) + len(e.reported) }

// Categories returns the number of entries (domains and exceptions) of each
// category in the compiled set, for status output. The map is a copy.
func (e *Engine) Categories() map[string]int {
	m := make(map[string]int, len(e.counts))
	for k, v := range e.counts {
		m[k] = v
	}
	return m
}

// Default returns the verdict applied when no rule matches.
func (e *Engine) Default() Verdict { return e.fallback }

// catBuf is the number of categories a decision keeps on the stack; a host
// listed in more still works, through a heap allocation.
const catBuf = 8

// noRule is the rule number of the empty candidate: after every rule.
const noRule = ^uint32(0)

// Decide returns the decision for req. It is pure: no I/O, no clock (it
// reads req.Time), no allocation. An empty host is blocked with
// ReasonInvalid. The Via of an allowed decision is the rule's route, else
// the configured default route; a blocked decision has none.
func (e *Engine) Decide(req Request) Decision {
	d := e.decide(req)
	if e.report != nil && d.Verdict == Allow {
		if rd := e.report.decide(req); rd.Verdict == Block && !rd.Default && e.reported[rd.Rule.Index] {
			d.WouldBlock, d.Report = true, rd.Rule
		}
	}
	return d
}

// decide is Decide without the report-only rules.
func (e *Engine) decide(req Request) Decision {
	host := req.Host
	if host == "" {
		return Decision{Verdict: Block, Reason: ReasonInvalid}
	}
	// The best candidate so far: the first (rule, pattern) in order whose
	// destination matched and whose rule's conditions hold. Candidates are
	// offered as they are found, in no order, so none need be kept; one
	// that comes after the best is not even matched.
	d := decider{e: e, req: &req, best: atom{rule: noRule}}
	var bb, ab [catBuf]uint16
	blocked, excepted := bb[:0], ab[:0]

	// An IP literal is parsed only when its last label could be one: a
	// domain's starts with a letter (or is punycode "xn--"), an IPv4
	// address's with a digit, and an IPv6 address has colons.
	i := strings.LastIndexByte(host, '.')
	var ip netip.Addr
	isIP := false
	if tld := host[i+1:]; tld != "" && (tld[0]-'0' <= 9 || host[0] == '[' || strings.IndexByte(tld, ':') >= 0) {
		ip, isIP = parseIP(host)
	}

	// The suffix walk: the label suffixes of the host, right to left
	// ("com", "example.com", "b.example.com", ...), hashed incrementally
	// (see step). The suffixes below the first one that is not heavy share
	// their base (see keyBase), so one block of the prefilter and one home
	// slot in the index: the first lookup there pays the cache miss, the
	// others find the line in cache. A suffix that the prefilter says is
	// not a key is not looked up: most hosts read only the prefilter.
	words := e.index.words
	h, labels, end := uint64(0), 0, len(host)
	heavy := true // every suffix so far (but the top label) is heavy
	var base uint64
	var blk *bloomBlock
	for {
		h = step(&e.hk, h, host[i+1:end])
		labels++
		if heavy {
			base, blk = h, e.pre.block(h)
			if labels >= 2 && !e.heavy.has(h) {
				heavy = false
			}
		}
		// Not the empty suffix after a final dot, and maybe a key.
		if off := i + 1; off < len(host) &&
			// blk.has(h), written out: it is too big to be inlined.
			blk[0]>>(h&63)&(blk[1]>>(h>>6&63))&(blk[2]>>(h>>12&63))&(blk[3]>>(h>>18&63))&
				(blk[4]>>(h>>24&63))&(blk[5]>>(h>>30&63))&(blk[6]>>(h>>36&63))&(blk[7]>>(h>>42&63))&1 != 0 {
			pos := e.index.start(base)
			if v, ok := e.index.getFrom(h, pos, words[pos]); ok {
				n := &e.nodes[v]
				if off == 0 || !isIP { // an IP literal has no parent domains
					if len(n.cats) > 0 {
						blocked = append(blocked, n.cats...)
					}
					if len(n.allows) > 0 {
						excepted = append(excepted, n.allows...)
					}
				}
				if n.check != 0 {
					d.patterns(n, host, off, isIP)
				}
			}
		}
		if i < 0 {
			break
		}
		end = i
		i = strings.LastIndexByte(host[:end], '.')
	}
	// A glob matches only hosts that start with its literal prefix: most
	// hosts can skip the loose ones at once.
	if c := host[0]; e.looseAt[c>>6]>>(c&63)&1 != 0 {
		for gi := range e.loose {
			if g := &e.loose[gi]; less(g.at, d.best) && g.match(host, -1) {
				d.offer(g.at)
			}
		}
	}
	if isIP {
		for i := range e.cidrs {
			if c := &e.cidrs[i]; less(c.at, d.best) && c.prefix.Contains(ip) {
				d.offer(c.at)
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
		if r := &e.rules[ri]; r.admits(&req) {
			return r.decision(-1)
		}
	}
	if d.best.rule == noRule {
		return e.dflt
	}
	return e.rules[d.best.rule].decision(int(d.best.pat))
}

// decider is the state of one decision that its helpers share; it lives on
// Decide's stack.
type decider struct {
	e    *Engine
	req  *Request
	best atom // the first candidate whose conditions hold; rule noRule: none
}

// offer makes at the best candidate if it comes before it and its rule's
// conditions hold.
func (d *decider) offer(at atom) {
	if less(at, d.best) && d.e.rules[at.rule].admits(d.req) {
		d.best = at
	}
}

// patterns offers the rule patterns of node n, the node of host[off:],
// that match host. The node's second hash is compared, so that a collision
// of the index's cannot fake a pattern, only once a pattern would be
// offered.
func (d *decider) patterns(n *node, host string, off int, isIP bool) {
	verified := false
	genuine := func() bool {
		if !verified {
			if checkHash(d.e.seed2, host[off:]) != n.check {
				return false
			}
			verified = true
		}
		return true
	}
	if off == 0 {
		for _, at := range n.exact {
			if less(at, d.best) {
				if !genuine() {
					return
				}
				d.offer(at)
			}
		}
	}
	if off == 0 || !isIP {
		for _, at := range n.suffix {
			if less(at, d.best) {
				if !genuine() {
					return
				}
				d.offer(at)
			}
		}
	}
	for gi := range n.globs {
		if g := &n.globs[gi]; less(g.at, d.best) && g.match(host, off) {
			if !genuine() {
				return
			}
			d.offer(g.at)
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

// decision is the rule's answer; pat is the matching pattern, or -1.
func (r *rule) decision(pat int) Decision {
	d := Decision{Verdict: r.verdict, Reason: r.reason, Rule: r.ref}
	if pat >= 0 {
		d.Rule.Pattern = r.pats[pat].text
		d.Category = r.pats[pat].category
	}
	if d.Verdict == Allow {
		d.Via = r.via
		if r.enforce != nil && pat >= 0 {
			d.Enforce = r.enforce[r.pats[pat].text]
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
