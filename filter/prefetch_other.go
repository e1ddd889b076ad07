//go:build !amd64 && !arm64

package filter

// prefetch does nothing here: see prefetch_asm.go.
func prefetch(p *uint64) {}
