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
// It holds the keys of the category index only. The rule index (see
// index.go), thousands of names, stays in cache and is read without it:
// waiting for the prefilter's line, itself often a miss, before reading
// the rule index put that miss and the one of the name's patterns one
// after the other on the path of every host a glob matches. What the
// prefilter keeps of the rule index is nothing: a small bitmap of their
// bases (Engine.nameBases, see baseBits) says which hosts may have a name
// of it, so that the others, most of them, do not read the rule index.
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
}

// newPrefilter returns an empty prefilter sized for n keys.
func newPrefilter(n int) prefilter {
	nb := max((n*prefilterBits+511)/512, 1)
	return prefilter{words: hugeWords(nb * 8), blocks: nb}
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

// nameBits is the number of bits of a baseBits per name it holds: at 16,
// at most one base in 16 that is no name's tests positive. (A bit for each
// block of the prefilter, as this was, was set for a third of the blocks
// with 10,000 globs, and a third of all hosts read the rule index.)
const nameBits = 16

// baseBits is a bitmap of the bases (see keyBase) of the names of the rule
// index: a bit for each, chosen by the high bits of the base's hash. It is
// a few KiB (32 KiB for 10,000 globs), in cache; a host whose base's bit is
// clear reads nothing of the rule index.
type baseBits struct {
	words []uint64
	shift uint // 64 - log2 of the number of bits
}

// newBaseBits returns an empty bitmap for n bases: at least nameBits bits
// for each, a power of two, at least 64.
func newBaseBits(n int) baseBits {
	size := 64
	for size < n*nameBits {
		size *= 2
	}
	return baseBits{words: make([]uint64, size/64), shift: uint(64 - bits.TrailingZeros(uint(size)))}
}

// add records the base that hashes to base.
func (s *baseBits) add(base uint64) {
	i := base >> s.shift
	s.words[i>>6] |= 1 << (i & 63)
}

// has reports whether base may have been added: false means it was not.
func (s *baseBits) has(base uint64) bool {
	i := base >> s.shift
	return s.words[i>>6]>>(i&63)&1 != 0
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
