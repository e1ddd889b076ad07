package filter

// Heavy suffixes and the base of a name: which home slot (and prefilter
// block) the label suffixes of a host share.

import (
	"slices"
	"strings"
)

// heavyMin is the number of names a suffix may have below it (itself
// included) before it is heavy; see Engine.keyBase.
const heavyMin = 8

// hashSet is a small open-addressing set of hashes (never 0), for the heavy
// suffixes. It is small enough to stay in cache.
type hashSet struct {
	words []uint64 // a power of two in length, or empty
}

func newHashSet(hs []uint64) hashSet {
	if len(hs) == 0 {
		return hashSet{}
	}
	n := 8
	for n < 2*len(hs) {
		n *= 2
	}
	s := hashSet{words: make([]uint64, n)}
	for _, h := range hs {
		i := h & uint64(n-1)
		for s.words[i] != 0 && s.words[i] != h {
			i = (i + 1) & uint64(n-1)
		}
		s.words[i] = h
	}
	return s
}

// has reports whether h is in the set.
func (s *hashSet) has(h uint64) bool {
	words := s.words
	if len(words) == 0 {
		return false
	}
	m := uint64(len(words) - 1)
	for i := h & m; ; i = (i + 1) & m {
		switch words[i] {
		case h:
			return true
		case 0:
			return false
		}
	}
}

// keyBase returns the index key of domain d (the hash of d) and the hash
// of its base, the suffix that decides its home slot.
//
// The base of a domain is its suffix of two labels ("example.com" for
// "a.b.example.com"), or a longer one when that is heavy: a suffix with
// more than heavyMin names below it in the index, such as "co.uk" or
// "blogspot.com", is passed over for the suffix with one more label, and so
// on ("x.co.uk"). A heavy suffix, a domain of one label and a domain all of
// whose suffixes are heavy are their own base.
//
// So all the label suffixes of a host below its first non-heavy suffix
// share one home, and the run of slots from it holds them all, next to each
// other: Decide pays one cache miss for them, not one per suffix. The few
// suffixes above (the top-level label and heavy ones) are each at their own
// home, and are the most often read, so mostly in cache.
func (e *Engine) keyBase(d string) (key, base uint64) {
	h, j, end := uint64(0), 0, len(d)
	heavy := true
	for {
		i := strings.LastIndexByte(d[:end], '.')
		h = step(&e.hk, h, d[i+1:end])
		j++
		if heavy {
			base = h
			if j >= 2 && !e.heavy.has(h) {
				heavy = false
			}
		}
		if i < 0 {
			return h, base
		}
		end = i
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
	hs := make([]uint64, 0, len(cats)+len(b.ruleNames))
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
		for _, d := range b.ruleNames {
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
