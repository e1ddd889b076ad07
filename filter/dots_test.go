package filter

import (
	"math/rand/v2"
	"strings"
	"testing"
)

// TestLastDot checks that the dot walk Decide does, from dotMask and
// lastDot, finds every dot strings.LastIndexByte finds, for hosts of every
// length up to and past 64 bytes, with dots and other bytes everywhere
// (bytes next to '.' in value, and 0x80 and up, included).
func TestLastDot(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	alphabet := "..a-z0/-\x2d\x2f\xae\xff\x00\x01\x2e"
	for n := 0; n <= 80; n++ {
		for range 200 {
			b := make([]byte, n)
			for i := range b {
				b[i] = alphabet[r.IntN(len(alphabet))]
			}
			host := string(b)
			dots := dotMask(host)
			for end := len(host); ; {
				want := strings.LastIndexByte(host[:end], '.')
				if got := lastDot(host, dots, end); got != want {
					t.Fatalf("lastDot(%q, %d) = %d, want %d", host, end, got, want)
				}
				if want < 0 {
					break
				}
				end = want
			}
		}
	}
}
