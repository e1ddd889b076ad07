package filter

// Globs: how a glob pattern is prepared at compile time and matched.

import (
	"strings"
	"unicode/utf8"

	"github.com/gobwas/glob"
)

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
	for i := range e.nameNodes {
		for _, g := range e.nameNodes[i].globs {
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
	for i := range e.nameNodes {
		nd := &e.nameNodes[i]
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
