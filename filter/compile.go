package filter

// Compiling a rules.Set into an Engine: the hashed index of names, the
// category entries, the globs and the rules.

import (
	"errors"
	"fmt"
	"hash/maphash"
	"math"
	"net/netip"
	"slices"
	"strings"

	"github.com/gobwas/glob"

	"github.com/sluiceproxy/sluice/rules"
)

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
	cats   *buildTable         // the category index being built
	names  *buildTable         // the rule index being built

	ruleNames []string     // the names of exact, suffix and glob patterns
	nodeNames []string     // rule name id -> the name
	nodePats  [][]buildPat // rule name id -> its patterns, until packNames
	loose     []buildPat   // the globs with no literal suffix, until packNames
	checks    []uint64     // rule name id -> its namePat.check
	first     []uint32     // rule name id -> its first pattern in e.namePats
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
	// Node 0 of each index: the empty node of a fresh slot.
	e.catNodes = []catNode{{}}
	b.nodeNames, b.nodePats, b.checks = []string{""}, [][]buildPat{nil}, []uint64{0}

	// Pass 1: the categories in use and the size of the indexes.
	keys, nameKeys := 0, 0
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
				nameKeys++
				b.ruleNames = append(b.ruleNames, p.Host)
			case rules.Glob:
				if lit := literalSuffix(p.Host); lit != "" {
					nameKeys++
					b.ruleNames = append(b.ruleNames, lit)
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
	b.forEachDomain(func(d string, _ uint16, _ bool) {
		cats = append(cats, e.hashName(d))
		e.numeric = e.numeric || ipLike(d)
	})
	for _, name := range b.ruleNames {
		e.numeric = e.numeric || ipLike(name)
	}
	b.findHeavy(cats)
	// The keys of one label ("localhost", "com"): a host's top-level
	// label is looked up only when it is one of them (see decide).
	var top []uint64
	for _, n := range cats {
		if n.labels == 1 {
			top = append(top, n.key)
		}
	}
	for _, name := range b.ruleNames {
		if name != "" && strings.IndexByte(name, '.') < 0 {
			key, _ := e.keyBase(name)
			top = append(top, key)
		}
	}
	e.top = newHashSet(top)
	b.cats, b.names = newBuildTable(keys), newBuildTable(nameKeys)
	e.pre = newPrefilter(keys + nameKeys)

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
	var err error
	if e.cats, err = b.cats.pack(len(e.catNodes), b.merge); err != nil {
		return nil, err
	}
	// The rule index maps a name to its first pattern.
	if err := b.packNames(); err != nil {
		return nil, err
	}
	for i := range b.names.slots {
		if s := &b.names.slots[i]; s.key != 0 {
			s.val = b.first[s.val]
		}
	}
	// Two rule names cannot share a node: a new seed will part them.
	noMerge := func(x, y uint32) (uint32, error) { return 0, errCollision }
	if e.names, err = b.names.pack(len(e.namePats), noMerge); err != nil {
		return nil, err
	}
	adviseHuge(e.pre.words)
	return e, nil
}

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

// checkHash returns the second hash of a rule name, for namePat.check: never 0.
func checkHash(seed maphash.Seed, name string) uint64 {
	return maphash.String(seed, name) | 1
}

// merge returns a node for two category domains whose hashes the category
// index cannot tell apart: one that has both their categories.
func (b *builder) merge(x, y uint32) (uint32, error) {
	e := b.e
	n, m := &e.catNodes[x], &e.catNodes[y]
	u := catNode{cats: union(n.cats, m.cats), allows: union(n.allows, m.allows)}
	v := uint32(len(e.catNodes))
	e.catNodes = append(e.catNodes, u)
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
	e.pre.add(key, base)
	s, fresh := b.cats.slot(key, base)
	if fresh {
		if !allow {
			if b.single[id] == 0 {
				b.single[id] = uint32(len(e.catNodes))
				e.catNodes = append(e.catNodes, catNode{cats: []uint16{id}})
			}
			s.val = b.single[id]
			return
		}
	}
	n := &e.catNodes[s.val]
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
	m := catNode{cats: slices.Clone(n.cats), allows: slices.Clone(n.allows)}
	if allow {
		m.allows = append(m.allows, id)
	} else {
		m.cats = append(m.cats, id)
	}
	v := uint32(len(e.catNodes))
	e.catNodes = append(e.catNodes, m)
	b.merged[k] = v
	s.val = v
}

// own returns the id of rule name name (its slot in the rule index holds
// it until packNames), making it when needed.
func (b *builder) own(name string) (uint32, error) {
	e := b.e
	key, base := e.keyBase(name)
	e.pre.addName(e.hk.nameKey(key), base)
	s, fresh := b.names.slot(key, base)
	if !fresh {
		if b.nodeNames[s.val] != name {
			return 0, errCollision
		}
		return s.val, nil
	}
	s.val = uint32(len(b.nodeNames))
	b.checks = append(b.checks, checkHash(e.seed2, name))
	b.nodeNames = append(b.nodeNames, name)
	b.nodePats = append(b.nodePats, nil)
	return s.val, nil
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
			kind := uint8(patSuffix)
			if p.Kind == rules.Exact {
				kind = patExact
			}
			b.nodePats[id] = append(b.nodePats[id], buildPat{namePat: namePat{kind: kind, at: at}, written: p.Text})
		case rules.Glob:
			g, err := glob.Compile(p.Host, '.')
			if err != nil || p.Host == "" {
				return fmt.Errorf("filter: %s: invalid glob %q: %v", name, p.Text, err)
			}
			lit := literalSuffix(p.Host)
			ga := newGlob(p.Host, g, lit)
			ga.at, ga.written = at, p.Text
			if lit == "" {
				b.loose = append(b.loose, ga)
				break
			}
			id, err := b.own(lit)
			if err != nil {
				return err
			}
			b.nodePats[id] = append(b.nodePats[id], ga)
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

// ipLike reports whether name could be a label suffix of an IP literal
// host (see Engine.numeric): every suffix of "93.184.1.2" has a last label
// that starts with a digit, and every suffix of an IPv6 literal, but one
// ending in an IPv4 address, has a colon or a bracket. It may say yes for
// a name that no IP literal has ("1.example"), never no for one it has.
func ipLike(name string) bool {
	last := name[strings.LastIndexByte(name, '.')+1:]
	return last != "" && last[0]-'0' <= 9 || strings.ContainsAny(name, ":[]")
}
