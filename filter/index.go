package filter

import (
	"hash/maphash"
	"math/bits"
	"slices"
)

// The domain index maps the 64-bit hash of a domain to the id of a node that
// says what the domain is: a member of some categories, an exception of
// some categories, the host of exact or suffix patterns, or the literal suffix
// of some globs.
//
// Only hashes are kept, not names, so that millions of category domains fit
// in about 14 bytes each: one 8-byte word per slot at a load factor of 0.6,
// the hash's high bits and the node id sharing the word (see index). The
// hash is hash/maphash with a seed drawn for each Engine: deterministic for
// the life of the Engine, and not predictable by a client who would forge a
// host name that collides with a listed one.
//
// The price is a false match when a looked-up name that is not in the index
// agrees with a stored one on the bits kept: with b bits for node ids
// (b = 14 for the 2,000,000-domain benchmark), about 2^-(64-b) per word
// compared, so about 10^-15 per lookup there. Rule patterns (exact, suffix
// and glob suffixes) do not take that risk: their node keeps the name, and
// Decide compares it.

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
	key uint64 // 0: empty
	val uint32
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

// slot returns the slot for h, claiming an empty one when h is new; fresh
// reports which. The table is never full: tableSize leaves room.
func (t *buildTable) slot(h uint64) (s *buildSlot, fresh bool) {
	i := home(h, len(t.slots))
	for {
		s := &t.slots[i]
		if s.key == h {
			return s, false
		}
		if s.key == 0 {
			s.key = h
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
	x := &index{words: make([]uint64, len(t.slots)), mask: 1<<b - 1}
	for i, s := range t.slots {
		if s.key != 0 {
			x.words[i] = s.key&^x.mask | uint64(s.val)
		}
	}
	// A twin has the same high bits, hence the same home, and sits in the
	// same run of slots: check each key against those before it.
	for i, s := range t.slots {
		if s.key == 0 {
			continue
		}
		for j := home(s.key, len(t.slots)); j != uint64(i); j = (j + 1) % uint64(len(t.slots)) {
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
	return x, nil
}

// start returns the home slot of h.
func (x *index) start(h uint64) uint64 { return home(h, len(x.words)) }

// get returns the node id stored for h.
func (x *index) get(h uint64) (uint32, bool) {
	pos := x.start(h)
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

// hashName returns the index key of a domain: never 0.
func hashName(seed maphash.Seed, s string) uint64 {
	h := maphash.String(seed, s)
	if h == 0 {
		h = 1
	}
	return h
}
