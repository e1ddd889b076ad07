package filter

import "math/bits"

// The prefilter answers, without reading the index, most lookups of a name
// that is not in it: the common case on a gateway, where most hosts are in
// no list and have no listed suffix. The index of millions of domains is
// tens of megabytes, and every read of it is a cache and TLB miss (about
// 150 ns on a virtual machine); the prefilter is a blocked Bloom filter of
// one byte per key (2 MB for two million keys), that stays mostly in the
// last-level cache. (Two bytes per key, a quarter of the false positives,
// measured slower at two million keys: 4 MB does not stay in cache.)
//
// It holds the keys of both indexes (see index.go): a category domain's
// hash, and a rule name's hash as nameKey, so that one line answers for
// both and a test for one index is a false positive for the other only as
// often as for any absent name.
//
// A block is one 64-byte cache line: eight words, of which each key sets
// four bits in one (a "register-blocked" Bloom filter): a test is one
// word and a mask, where setting one bit in each of the eight words (a
// "split block" filter, as this was) took eight shifts and loads, for a
// tenth fewer false positives (3.0% against 3.3% of names; measured:
// 7% fewer instructions per decision of the uniform mix). The block of a key is
// chosen by its base, as its home slot in the index is (see keyBase), so
// the label suffixes of a host below its first non-heavy suffix are all
// tested in one cache line, and a host with no listed suffix costs one
// read of the prefilter instead of one of the index. The few suffixes
// above the base (the top-level label and heavy ones such as "co.uk") each
// have a block of their own, read by every host under them, so in cache.
//
// The block is chosen from the high bits of the base's hash, and the word
// and the bits within it from the low 27 bits of the key's hash: for a key
// that is its own base, the two do not depend on each other.
//
// A Bloom filter has no false negatives: every key of the index tests
// positive, so Decide, which skips the index for a suffix that tests
// negative, decides as it would without the prefilter. A false positive
// costs the lookup in the index that would have happened anyway. At 8 bits
// per key, about 3.3 tests in a hundred are false positives, and 4.3 hosts
// in a hundred test positive for some suffix (see
// TestPrefilterFalsePositives).

// prefilterBits is the number of filter bits per key.
const prefilterBits = 8

// bloomBlock is one cache line of the prefilter.
type bloomBlock [8]uint64

// prefilter is a blocked Bloom filter of the index keys. Its words are
// over 32 KiB for more than about 2,000 keys, which the Go allocator
// places on a page boundary, so each block is a cache line; from a
// megabyte, on a huge page boundary (see hugeWords), so that the few
// megabytes of a large engine's prefilter are one or two pages for the
// TLB, which the reads of the index do not push out.
type prefilter struct {
	words  []uint64 // the blocks, eight words each; at least one
	blocks int
	// names has a bit for each block, set when the block holds a key of
	// the rule index (see nameKey): a few KiB, in cache. Most blocks hold
	// none, and their hosts skip the test for the rule index.
	names []uint64
}

// newPrefilter returns an empty prefilter sized for n keys.
func newPrefilter(n int) prefilter {
	nb := max((n*prefilterBits+511)/512, 1)
	return prefilter{words: hugeWords(nb * 8), blocks: nb, names: make([]uint64, (nb+63)/64)}
}

// blockOf returns the number of the block of the keys whose base hashes
// to base.
func (p *prefilter) blockOf(base uint64) uint64 {
	i, _ := bits.Mul64(base, uint64(p.blocks))
	return i
}

// at returns block i.
func (p *prefilter) at(i uint64) *bloomBlock { return (*bloomBlock)(p.words[i*8:]) }

// block returns the block of the keys whose base hashes to base.
func (p *prefilter) block(base uint64) *bloomBlock { return p.at(p.blockOf(base)) }

// hasNames reports whether block i may hold a key of the rule index.
func (p *prefilter) hasNames(i uint64) bool { return p.names[i>>6]>>(i&63)&1 != 0 }

// addName records nameKey h of a name of the rule index, whose base
// hashes to base.
func (p *prefilter) addName(h, base uint64) {
	i := p.blockOf(base)
	p.names[i>>6] |= 1 << (i & 63)
	p.add(h, base)
}

// add records key h, whose base hashes to base.
func (p *prefilter) add(h, base uint64) {
	b := p.block(base)
	b[h>>24&7] |= keyBits(h)
}

// has reports whether key h, whose base hashes to base, may be in the
// index: false means it is not.
func (p *prefilter) has(h, base uint64) bool {
	return p.block(base).has(h)
}

// keyBits returns the four bits that key h sets in its word.
func keyBits(h uint64) uint64 {
	return 1<<(h&63) | 1<<(h>>6&63) | 1<<(h>>12&63) | 1<<(h>>18&63)
}

// has reports whether the bits of key h are all set in its word of b.
func (b *bloomBlock) has(h uint64) bool {
	m := keyBits(h)
	return b[h>>24&7]&m == m
}
