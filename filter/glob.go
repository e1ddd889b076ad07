package filter

// Globs: how a glob pattern is prepared at compile time and matched.

import (
	"strings"
	"unicode/utf8"

	"github.com/gobwas/glob"
)

// namePat is one pattern that belongs to a name of the rule index: the
// name itself (patExact), the name and its subdomains (patSuffix), or a
// glob whose literal suffix is the name. The globs with no literal suffix
// (Engine.loose) are namePats too.
//
// The patterns of a name are a run of Engine.namePats, the last one
// marked; the rule index maps the name to the first. So a decision reads
// what it needs of a name that the host has, check included, from one
// cache line or two, and the text for the Decision from the same line.
type namePat struct {
	// check is a second hash of the name, with a seed of its own
	// (Engine.seed2), the same in every pattern of the run. Decide
	// compares it before it offers a pattern, so that a collision of the
	// index's hash cannot fake a rule pattern, without reading the name
	// from memory: a false match needs both hashes to agree, about
	// 2^-(127-b) per lookup. 0 for a loose glob.
	check  uint64
	info   patInfo       // the pattern as written, for the Decision
	g      *glob.Pattern // nil but for a general glob (kind globGeneral)
	kind   uint8
	last   bool   // the last pattern of its name
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
	patExact           // not a glob: the name itself
	patSuffix          // not a glob: the name and its subdomains
)

// match reports whether the glob matches host, with the semantics of
// gobwas/glob compiled with the separator '.'. off is where the name of
// the glob's node starts in host (known to be there), or -1. g is a glob.
func (g *namePat) match(host string, off int) bool {
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

// newGlob prepares glob p, compiled as g, whose literal suffix is lit.
func newGlob(p string, g *glob.Pattern, lit string) namePat {
	if pre, kind, suf, ok := simpleGlob(p); ok {
		return namePat{kind: kind, prefix: pre, suffix: suf,
			dot: lit != "" && len(suf) == len(lit)+1 && suf[0] == '.' && suf[1:] == lit}
	}
	ga := namePat{g: g, prefix: p}
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

// packNames moves the patterns of all rule names and the loose globs into
// one array, and the texts of the globs into one string: a few hundred
// kilobytes for ten thousand globs, that stay in cache, where Decide would
// otherwise follow a pointer to memory of its own for each name's patterns
// and each glob's texts. A name's patterns are next to each other, in the
// order they were added, so that a decision reads them in one or two
// cache lines. It also notes the first bytes of the loose globs' literal
// prefixes (all bytes when one has none) in e.looseAt.
func (b *builder) packNames() {
	e := b.e
	n := len(e.loose)
	var text strings.Builder
	for _, ps := range b.nodePats {
		for _, g := range ps {
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
	intern := func(g *namePat) {
		g.prefix = all[off : off+len(g.prefix)]
		off += len(g.prefix)
		g.suffix = all[off : off+len(g.suffix)]
		off += len(g.suffix)
	}
	pool := make([]namePat, 1, n+1) // 0: no name's first pattern
	b.first = make([]uint32, len(b.nodePats))
	for id, ps := range b.nodePats {
		if len(ps) == 0 {
			continue
		}
		b.first[id] = uint32(len(pool))
		for _, g := range ps {
			intern(&g)
			g.check = b.checks[id]
			pool = append(pool, g)
		}
		pool[len(pool)-1].last = true
	}
	start := len(pool)
	for _, g := range e.loose {
		intern(&g)
		pool = append(pool, g)
	}
	e.namePats = pool[:start:start]
	e.loose = pool[start:len(pool):len(pool)]
	e.looseKey = make([]prefixKey, len(e.loose))
	for i, g := range e.loose {
		e.looseKey[i] = newPrefixKey(g.prefix)
	}
	for _, g := range e.loose {
		if g.prefix == "" {
			e.looseAt = [4]uint64{^uint64(0), ^uint64(0), ^uint64(0), ^uint64(0)}
			break
		}
		c := g.prefix[0]
		e.looseAt[c>>6] |= 1 << (c & 63)
	}
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

// prefixKey holds the first bytes of a glob's literal prefix (up to eight)
// as a little-endian word, and a mask of those bytes: a host that has the
// prefix has these first bytes (head(host)&mask == word), so most hosts
// are turned away from a loose glob by one comparison, without a call.
type prefixKey struct{ word, mask uint64 }

func newPrefixKey(prefix string) prefixKey {
	var k prefixKey
	for i := 0; i < len(prefix) && i < 8; i++ {
		k.word |= uint64(prefix[i]) << (8 * i)
		k.mask |= 0xff << (8 * i)
	}
	return k
}

// head returns the first eight bytes of s as a little-endian word, zeros
// past its end.
func head(s string) uint64 {
	if len(s) >= 8 {
		return load64(s)
	}
	var w uint64
	for i := len(s) - 1; i >= 0; i-- {
		w = w<<8 | uint64(s[i])
	}
	return w
}
