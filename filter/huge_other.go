//go:build !linux

package filter

// adviseHuge does nothing here: see huge_linux.go.
func adviseHuge(s []uint64) {}
