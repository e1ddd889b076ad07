package filter

import (
	"hash/maphash"
	"math/bits"
	"slices"
)

// An index maps the 64-bit hash of a name to a small number: the category
// index (Engine.cats) maps a category domain to the id of a catNode, the
// set of categories that list it or except it; the rule index
// (Engine.names) maps the name of an exact or suffix pattern, or the
// literal suffix of a glob, to its first pattern in Engine.namePats.
//
// Only hashes are kept, not names, so that millions of category domains fit
// in about 14 bytes each: one 8-byte word per slot at a load factor of 0.6,
// the hash's high bits and the value sharing the word (see index). The
// hash (see step) is keyed with a secret drawn for each Engine from a
// maphash seed: deterministic for the life of the Engine, and not
// predictable by a client who would forge a host name that collides with a
// listed one. A blocked Bloom filter of the keys of both indexes, a byte
// per key, answers most lookups of absent names first (see prefilter), so
// that a host a glob matches does not read the category index, whose lines
// are mostly not in cache. The keys of one label are also in an exact set
// (Engine.top), so that a host's top-level label is looked up only when
// some key is that label alone.
//
// The key of a domain is the hash of its labels chained right to left (see
// step), so that Decide hashes a host once for all its suffixes. A key's
// probe does not start at a home of its own but at the home of its base
// (see Engine.keyBase): the label suffixes of one host sit in one run of
// slots, and a decision mostly pays one cache miss in the index.
//
// The price is a false match when a looked-up name that is not in the index
// agrees with a stored one on the bits kept: with b bits for the value
// (b = 8 for the category index of the 2,000,000-domain benchmark, whose
// domains share about 200 catNodes), about 2^-(64-b) per word compared, so
// about 10^-17 per lookup there; TestCategoryIndexBits keeps b small. Rule
// patterns do not take that risk: each keeps a second, independent 64-bit
// hash of its name (namePat.check), which Decide compares.

// loadNum/loadDen is the table's maximum load factor.
const loadNum, loadDen = 3, 5

// tableSize returns the number of slots for n keys.
func tableSize(n int) int { return n*loadDen/loadNum + 8 }

// home returns the first slot to probe for h in a table of size slots,
// mapping the high bits of the hash onto the size with a multiply (Lemire's
// fast range) rather than a modulo.
func home(h uint64, size int) uint64 {
	i, _ := bits.Mul64(h, uint64(size))
	return i
}

// buildSlot is one entry of the table Compile fills.
type buildSlot struct {
	key  uint64 // 0: empty
	home uint64 // the slot probing for key starts at
	val  uint32
}

// buildTable is an open-addressing hash table with linear probing from
// uint64 keys (never 0) to node ids, used while compiling; pack turns it
// into the compact index that Decide reads.
type buildTable struct {
	slots []buildSlot
}

func newBuildTable(n int) *buildTable {
	return &buildTable{slots: make([]buildSlot, tableSize(n))}
}

// slot returns the slot for key h, whose probe starts at the home of the
// hash base (see Engine.keyBase), claiming an empty one when h is new;
// fresh reports which. The table is never full: tableSize leaves room.
func (t *buildTable) slot(h, base uint64) (s *buildSlot, fresh bool) {
	start := home(base, len(t.slots))
	i := start
	for {
		s := &t.slots[i]
		if s.key == h {
			return s, false
		}
		if s.key == 0 {
			s.key, s.home = h, start
			return s, true
		}
		i++
		if i == uint64(len(t.slots)) {
			i = 0
		}
	}
}

// index is the compact, read-only form of a buildTable: the same slots,
// each a single word holding the key's high bits and the node id in its
// low bits (mask). Node id 0 is never stored, so 0 marks an empty slot.
type index struct {
	words []uint64
	mask  uint64
}

// pack builds the index from t, whose values are node ids below nodes.
// Two keys that agree on the bits kept would shadow one another, so they
// are merged with merge, which returns the node for both (or errCollision
// when they cannot be, and Compile then tries another seed).
func (t *buildTable) pack(nodes int, merge func(a, b uint32) (uint32, error)) (*index, error) {
	b := max(bits.Len32(uint32(nodes-1)), 1)
	x := &index{words: hugeWords(len(t.slots)), mask: 1<<b - 1}
	for i, s := range t.slots {
		if s.key != 0 {
			x.words[i] = s.key&^x.mask | uint64(s.val)
		}
	}
	// A lookup of a key scans the run of slots from its home to its slot:
	// a twin there (a word with the same high bits) would answer for it.
	// Check each key against the words before it in its run.
	for i, s := range t.slots {
		if s.key == 0 {
			continue
		}
		for j := s.home; j != uint64(i); j = (j + 1) % uint64(len(t.slots)) {
			w := x.words[j]
			if (w^s.key)&^x.mask != 0 {
				continue
			}
			v, err := merge(uint32(w&x.mask), s.val)
			if err != nil {
				return nil, err
			}
			if uint64(v) > x.mask {
				return nil, errCollision // the new id does not fit: try a new seed
			}
			x.words[j] = w&^x.mask | uint64(v)
			break
		}
	}
	adviseHuge(x.words)
	return x, nil
}

// start returns the home slot of the hash base.
func (x *index) start(base uint64) uint64 { return home(base, len(x.words)) }

// get returns the node id stored for key h whose home derives from base.
func (x *index) get(h, base uint64) (uint32, bool) {
	pos := x.start(base)
	return x.getFrom(h, pos, x.words[pos])
}

// getFrom is get for a caller that has computed the home slot pos of h and
// loaded its word w.
func (x *index) getFrom(h, pos, w uint64) (uint32, bool) {
	words, mask := x.words, x.mask
	for i := pos; ; {
		if w == 0 {
			return 0, false
		}
		if (w^h)&^mask == 0 {
			return uint32(w & mask), true
		}
		i++
		if i == uint64(len(words)) {
			i = 0
		}
		w = words[i]
	}
}

// union returns the sorted union of two small id lists.
func union(a, b []uint16) []uint16 {
	u := append(slices.Clone(a), b...)
	slices.Sort(u)
	return slices.Compact(u)
}

// hashKey is the secret of the index hash: three random words drawn from
// the Engine's maphash seed, so deterministic for the life of the Engine and
// not predictable by a client who would forge a host name that collides
// with a listed one.
type hashKey struct{ k0, k1, k2 uint64 }

// nameKey returns the key that stands for the hash h of a name of the rule
// index in the prefilter, which holds the keys of both indexes: h with
// other bits, so that a name that is not a category domain does not test
// positive for the category index, nor the reverse, but as a false
// positive. (step uses k0 and k1; k2 is this one's own.)
func (k *hashKey) nameKey(h uint64) uint64 { return h ^ k.k2 }

func newHashKey(seed maphash.Seed) hashKey {
	word := func(s string) uint64 { return maphash.String(seed, s) | 1 }
	return hashKey{word("sluice/k0"), word("sluice/k1"), word("sluice/k2")}
}

// step extends the hash h of a domain by one label on its left: it returns
// the hash of label + "." + domain (h is 0 for the empty domain, before the
// top-level label). Hashing the labels of a host right to left this way
// gives the hashes of all its label suffixes for the price of hashing the
// host once.
//
// It is wyhash (final version) of the label with h as its seed and k as
// its secret: the construction of Go's own memhash on processors without
// AES instructions (runtime/hash64.go), written out here so that it
// inlines into the suffix walk and reads a short label in one or two loads
// where a call to maphash.String costs more than hashing. Two domains with
// different label sequences collide only if some step does, about 2^-64
// for a secret the client does not know.
func step(k *hashKey, h uint64, label string) uint64 {
	seed := h ^ mix(h^k.k0, k.k1)
	n := len(label)
	var a, b uint64
	switch {
	case n > 16:
		s := label
		for len(s) > 16 {
			seed = mix(load64(s)^k.k1, load64(s[8:])^seed)
			s = s[16:]
		}
		a, b = load64(label[n-16:]), load64(label[n-8:])
	case n >= 8:
		a, b = load64(label), load64(label[n-8:])
	case n >= 4:
		a, b = load32(label), load32(label[n-4:])
	case n > 0:
		a = uint64(label[0])<<16 | uint64(label[n>>1])<<8 | uint64(label[n-1])
	}
	a, b = bits.Mul64(a^k.k1, b^seed)
	x := mix(a^k.k0^uint64(n), b^k.k1)
	if x == 0 {
		x = 1 // 0 marks an empty slot
	}
	return x
}

// mix is wyhash's multiply-and-fold.
func mix(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	return hi ^ lo
}

// load64 returns the first 8 bytes of s, little-endian; the compiler makes
// it one load.
func load64(s string) uint64 {
	_ = s[7]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}

// load32 returns the first 4 bytes of s, little-endian.
func load32(s string) uint64 {
	_ = s[3]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24
}
