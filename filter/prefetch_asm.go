//go:build amd64 || arm64

package filter

// prefetch asks the processor to bring the cache line of p in, without
// waiting for it: a hint, which changes nothing but speed. See
// prefetch_amd64.s and prefetch_arm64.s.
//
//go:noescape
func prefetch(p *uint64)

// prefetchNTA is prefetch for a line that is read once and not again
// soon: the processor keeps it out of the outer caches as it can, so that
// it does not push out the lines that are read again.
//
//go:noescape
func prefetchNTA(p *uint64)
