package filter

import (
	"fmt"
	"strconv"
	"testing"
)

// TestHugeWords checks the tables Compile backs with huge pages: a large
// one starts on a huge page boundary, its capacity ends on one (so that
// adviseHuge covers all of it), and it is zeroed and of the length asked;
// a small one is a plain slice.
func TestHugeWords(t *testing.T) {
	addr := func(s []uint64) uint64 {
		a, err := strconv.ParseUint(fmt.Sprintf("%p", &s[0])[2:], 16, 64)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	for _, n := range []int{hugeMin / 8, 251_264, 3_350_000} {
		s := hugeWords(n)
		if len(s) != n {
			t.Fatalf("hugeWords(%d): length %d", n, len(s))
		}
		if a := addr(s); a%hugePage != 0 || uint64(cap(s))*8%hugePage != 0 {
			t.Errorf("hugeWords(%d): at %#x, %d bytes of capacity: want both multiples of %d", n, a, cap(s)*8, hugePage)
		}
		for i, w := range s {
			if w != 0 {
				t.Fatalf("hugeWords(%d)[%d] = %d, want 0", n, i, w)
			}
		}
		s[n-1] = 1 // the last word is writable
		adviseHuge(s)
	}
	if s := hugeWords(100); len(s) != 100 || cap(s) != 100 {
		t.Errorf("hugeWords(100): length %d, capacity %d, want a plain slice of 100", len(s), cap(s))
	}
}
