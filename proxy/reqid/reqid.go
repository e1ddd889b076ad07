// Package reqid hands out request ids: short strings, unique within the
// process, that tie what a client is shown (the block page) to the access
// line the proxy logged for that request. Both front ends take their ids
// from here, so an id is unique across HTTP and SOCKS.
package reqid

import (
	"crypto/rand"
	"strconv"
	"sync/atomic"
)

// alphabet spells the process prefix: lower-case letters and digits
// without the look-alikes 0/o and 1/l, to be read over the phone.
const alphabet = "abcdefghijkmnpqrstuvwxyz23456789"

var (
	// prefix tells apart the ids of two runs of the process, so that an id
	// still names one line in logs kept across restarts.
	prefix = newPrefix()
	next   atomic.Uint64
)

func newPrefix() string {
	var b [4]byte
	rand.Read(b[:]) // never fails (crypto/rand, Go 1.24+)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b[:]) + "-"
}

// New returns the next id: the process's four-letter prefix, a dash and a
// counter in base 36 ("k7qe-1", "k7qe-2s"). It is safe for concurrent use and
// costs one atomic add and one small allocation.
func New() string {
	var buf [20]byte
	b := append(buf[:0], prefix...)
	return string(strconv.AppendUint(b, next.Add(1), 36))
}
