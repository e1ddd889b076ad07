//go:build amd64 || arm64

package filter

// prefetch asks the processor to bring the cache line of p in, without
// waiting for it: a hint, which changes nothing but speed. See
// prefetch_amd64.s and prefetch_arm64.s.
//
//go:noescape
func prefetch(p *uint64)
