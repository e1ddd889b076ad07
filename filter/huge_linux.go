package filter

import (
	"syscall"
	"unsafe"
)

// hugeMin is the size from which a table is worth backing with huge pages.
const hugeMin = 1 << 20

// hugePage is the size of a transparent huge page on amd64 and arm64 (with
// 4 KiB base pages).
const hugePage = 2 << 20

// madvCollapse is MADV_COLLAPSE (Linux 6.1), which package syscall lacks.
const madvCollapse = 25

// hugeWords returns a zeroed table of n words. A large one (hugeMin bytes
// and up) starts on a huge page boundary and its huge pages, the last one
// included, lie within its allocation, so that all of it, not only its
// aligned middle, can be backed by huge pages (see adviseHuge): a random
// read of a table of megabytes otherwise misses the TLB as well as the
// cache, and on a virtual machine the page walk is itself two-dimensional.
// It costs up to 4 MiB of address space more than the table, most of
// which is never touched.
func hugeWords(n int) []uint64 {
	size := uintptr(n) * 8
	if size < hugeMin {
		return make([]uint64, n)
	}
	span := (size + hugePage - 1) &^ (hugePage - 1)
	all := make([]uint64, (span+hugePage)/8)
	p := uintptr(unsafe.Pointer(unsafe.SliceData(all)))
	off := ((p+hugePage-1)&^(hugePage-1) - p) / 8
	s := all[off : off+uintptr(n) : off+span/8]
	_ = syscall.Madvise(unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(s))), span), syscall.MADV_HUGEPAGE)
	return s
}

// adviseHuge asks the kernel to back the 2 MiB-aligned part of a large,
// filled table with transparent huge pages, now (MADV_COLLAPSE) and should
// it be paged again (MADV_HUGEPAGE), where the system leaves huge pages to
// madvise, as most distributions do. A table from hugeWords is aligned
// whole, to the end of its last huge page (its capacity). A random read of
// a table of tens of megabytes otherwise misses the TLB as well as the
// cache, and the page walk adds to the read (measured: about 8% of the
// mean decision with two million domains). It is advice: an error, or a
// kernel that ignores it, changes nothing but speed.
func adviseHuge(s []uint64) {
	size := uintptr(cap(s)) * 8
	if size < hugeMin {
		return
	}
	p := uintptr(unsafe.Pointer(unsafe.SliceData(s)))
	start, end := (p+hugePage-1)&^(hugePage-1), (p+size)&^(hugePage-1)
	if end <= start {
		return
	}
	b := unsafe.Slice((*byte)(unsafe.Add(unsafe.Pointer(unsafe.SliceData(s)), start-p)), end-start)
	_ = syscall.Madvise(b, syscall.MADV_HUGEPAGE)
	_ = syscall.Madvise(b, madvCollapse)
}
