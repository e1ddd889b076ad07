//go:build !linux

package filter

// hugeWords returns a zeroed table of n words: see huge_linux.go.
func hugeWords(n int) []uint64 { return make([]uint64, n) }

// adviseHuge does nothing here: see huge_linux.go.
func adviseHuge(s []uint64) {}
