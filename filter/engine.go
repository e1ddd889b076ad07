package filter

import (
	"errors"
	"hash/maphash"
	"net/netip"

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
// How Decide works: the names of the rule set are keys of two hash
// indexes (see index.go). The category domains, millions of them, are keys
// of the category index, behind a prefilter; the names of exact and suffix
// patterns and the literal suffix of every glob ("*.ads.example.com" ->
// "ads.example.com"), thousands at most, are keys of the rule index, small
// enough to stay in cache. Decide walks the label suffixes of the host
// once ("a.b.example.com", "b.example.com", "example.com", "com"), looks
// each up in both, and offers the (rule, pattern) pairs that match; the
// globs found on the way, the few globs with no literal suffix and, for an
// IP literal, the CIDR patterns are tried directly. The first pair in order
// (or rule without destinations) whose rule's conditions hold decides: it
// is kept as the pairs are offered, so none are collected or sorted, and a
// pattern after it is not even matched. A decision costs O(labels) and does
// not allocate.
type Engine struct {
	hk    hashKey      // the secret of the index keys: see step
	seed2 maphash.Seed // of nameNode.check, independent of seed
	heavy hashSet      // the heavy suffixes: see keyBase
	top   hashSet      // the keys of one label, of both indexes: see decide
	// numeric is set when a key of either index could be the suffix of an
	// IP literal (see ipLike): else Decide does not walk an IP literal's
	// suffixes.
	numeric bool

	pre      prefilter // the keys of both indexes, in cache: see prefilter.go
	cats     *index    // category domains -> catNodes
	catNodes []catNode
	names    *index          // rule names and literal suffixes of globs -> namePats
	namePats []namePat       // the patterns of each name, name after name
	globText string          // the literal texts of the globs: see namePat
	generals []*glob.Pattern // the matchers of the general globs

	rules   []rule
	anyDest []uint32 // rules without destination patterns, in order

	catNames []string       // category id -> name
	catRefs  [][]atom       // category id -> the patterns that name it
	loose    []namePat      // globs with no literal suffix: tried one by one
	looseAt  [4]uint64      // the first bytes of hosts a loose glob may match
	looseKey []prefixKey    // loose glob -> the first bytes of its prefix
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

// catNode is what the category index knows about a domain: the
// categories that list it. Category domains share their nodes: there is
// one for each set of categories, not one for each domain.
type catNode struct {
	cats   []uint16 // categories listing the domain
	allows []uint16 // categories listing the domain as an exception
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
