package filter

// Globs: how a glob pattern is prepared at compile time and matched.

import (
	"fmt"
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
// marked; the rule index maps the name to the first. A namePat is 48
// bytes and holds only what matching needs: the first bytes of its
// prefix, and where its texts are in Engine.globText, next to those of the
// name's other patterns, read only for a prefix over eight bytes or a
// suffix that is not "." and the name. The pattern as written, for the
// Decision, is there too, after them: the Decision takes the string from
// globText without reading its bytes. So a decision mostly reads what it
// needs of a name that the host has, check included, from one cache line,
// where each read that depends on another is a cache miss more.
type namePat struct {
	// check is a second hash of the name, with a seed of its own
	// (Engine.seed2), the same in every pattern of the run. Decide
	// compares it before it offers a pattern, so that a collision of the
	// index's hash cannot fake a rule pattern, without reading the name
	// from memory: a false match needs both hashes to agree, about
	// 2^-(127-b) per lookup. 0 for a loose glob.
	check uint64
	at    atom
	text  uint32 // where the prefix starts in Engine.globText; the suffix follows it
	pre   uint64 // the first bytes (up to eight) of the prefix, as prefixKey.word
	plen  uint16 // the length of the prefix: the literal text before the first wildcard, checked first
	slen  uint16 // for a simple glob, the length of the literal text after its wildcard
	wlen  uint16 // the length of the pattern as written, after the suffix; farText: not there
	gen   uint32 // for a general glob (kind globGeneral), its matcher in Engine.generals
	kind  uint8
	last  bool // the last pattern of its name
	dot   bool // the suffix is "." + the name of the glob's node
}

// maxGlobText is the longest prefix or suffix a namePat holds; a glob
// with a longer one is matched by gobwas as a whole.
const maxGlobText = 1<<16 - 1

// farText is the wlen of a pattern whose text as written is too long to
// be kept after its prefix and suffix: the Decision reads it from its rule.
const farText = 1<<16 - 1

// writtenText returns the pattern as written, which is in e.globText after
// its prefix and suffix, and whether it is there (see farText).
func (g *namePat) writtenText(e *Engine) (string, bool) {
	if g.wlen == farText {
		return "", false
	}
	at := g.text + uint32(g.plen) + uint32(g.slen)
	return e.globText[at : at+uint32(g.wlen)], true
}

// buildPat is a namePat while Compile builds it, with its texts and
// matcher, before packNames moves them into the Engine.
type buildPat struct {
	namePat
	prefix, suffix string
	written        string // the pattern as written
	g              *glob.Pattern
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
// the glob's node starts in host (known to be there), or -1. g is a glob
// of engine e.
func (g *namePat) match(e *Engine, host string, off int) bool {
	plen, slen := int(g.plen), int(g.slen)
	if len(host) < plen+slen {
		return false
	}
	// The prefix: its first eight bytes are in the namePat (pre), so
	// that most hosts are told without reading Engine.globText.
	if plen > 0 {
		var hw uint64
		if len(host) >= 8 {
			hw = load64(host)
		} else {
			hw = head(host)
		}
		if hw&(^uint64(0)>>(64-8*min(plen, 8))) != g.pre ||
			plen > 8 && host[8:plen] != e.globText[g.text+8:g.text+uint32(plen)] {
			return false
		}
	}
	at := len(host) - slen // where the suffix must start
	switch g.kind {
	case globGeneral:
		return e.generals[g.gen].Match(host)
	case globOne:
		// As gobwas: the character is the rune decoded at its place (an
		// invalid byte is one), and the rest must be the suffix exactly.
		r, w := utf8.DecodeRuneInString(host[plen:])
		if w == 0 || r == '.' || plen+w != at {
			return false
		}
	case globStar:
		if strings.IndexByte(host[plen:at], '.') >= 0 {
			return false
		}
	}
	if g.dot && off > 0 {
		// host[off:] is the node's name, and the suffix is "." and the
		// name: it is there if a dot is before it. No need to read the
		// suffix from memory.
		return host[off-1] == '.'
	}
	return host[at:] == e.globText[g.text+uint32(plen):g.text+uint32(plen+slen)]
}

// newGlob prepares glob p, compiled as g, whose literal suffix is lit.
func newGlob(p string, g *glob.Pattern, lit string) buildPat {
	if pre, kind, suf, ok := simpleGlob(p); ok && len(pre) <= maxGlobText && len(suf) <= maxGlobText {
		return buildPat{namePat: namePat{kind: kind,
			dot: lit != "" && len(suf) == len(lit)+1 && suf[0] == '.' && suf[1:] == lit},
			prefix: pre, suffix: suf}
	}
	ga := buildPat{g: g}
	if k := strings.IndexAny(p, globMeta); k >= 0 && k <= maxGlobText {
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
// one array, and the texts of the globs into one string, Engine.globText:
// a few hundred kilobytes for ten thousand globs, that stay in cache,
// where Decide would otherwise follow a pointer to memory of its own for
// each name's patterns and each glob's texts. A name's patterns are next
// to each other, in the order they were added, and so are their texts, so
// that a decision reads them in one or two cache lines. It also notes the
// first bytes of the loose globs' literal prefixes (all bytes when one
// has none) in e.looseAt.
func (b *builder) packNames() error {
	e := b.e
	n := len(b.loose)
	var text strings.Builder
	for _, ps := range b.nodePats {
		n += len(ps)
	}
	pool := make([]namePat, 1, n+1) // 0: no name's first pattern
	pack := func(g buildPat) error {
		if uint64(text.Len()) > 1<<32-1-3*maxGlobText {
			return fmt.Errorf("filter: the texts of the globs exceed 4 GiB")
		}
		g.text, g.plen, g.slen = uint32(text.Len()), uint16(len(g.prefix)), uint16(len(g.suffix))
		g.pre = newPrefixKey(g.prefix).word
		text.WriteString(g.prefix)
		text.WriteString(g.suffix)
		g.wlen = farText
		if len(g.written) < farText {
			g.wlen = uint16(len(g.written))
			text.WriteString(g.written)
		}
		if g.kind == globGeneral && g.g != nil {
			g.gen = uint32(len(e.generals))
			e.generals = append(e.generals, g.g)
		}
		pool = append(pool, g.namePat)
		return nil
	}
	b.first = make([]uint32, len(b.nodePats))
	for id, ps := range b.nodePats {
		if len(ps) == 0 {
			continue
		}
		b.first[id] = uint32(len(pool))
		for _, g := range ps {
			g.check = b.checks[id]
			if err := pack(g); err != nil {
				return err
			}
		}
		pool[len(pool)-1].last = true
	}
	start := len(pool)
	for _, g := range b.loose {
		if err := pack(g); err != nil {
			return err
		}
	}
	e.globText = text.String()
	e.namePats = pool[:start:start]
	e.loose = pool[start:len(pool):len(pool)]
	e.looseKey = make([]prefixKey, len(b.loose))
	for i, g := range b.loose {
		e.looseKey[i] = newPrefixKey(g.prefix)
	}
	for _, g := range b.loose {
		if g.prefix == "" {
			e.looseAt = [4]uint64{^uint64(0), ^uint64(0), ^uint64(0), ^uint64(0)}
			break
		}
		c := g.prefix[0]
		e.looseAt[c>>6] |= 1 << (c & 63)
	}
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
