package relay

import "sync"

// Sizes of the buffers of a buffered copy. A direction reads into a small
// buffer of its own while it waits or trickles, and borrows a pooled large
// one only while reads keep filling the small one: an idle tunnel holds no
// large buffer, unless its last read before falling silent was large.
const (
	smallBuf = 512
	largeBuf = 32 << 10
)

var largeBufs = sync.Pool{New: func() any { b := make([]byte, largeBuf); return &b }}

// Buffer lends a pooled buffer of 32 KiB, the one a buffered copy uses, to
// a copy outside a splice (the proxy's response bodies), so that the
// process keeps one pool of them; give it back with PutBuffer.
func Buffer() *[]byte { return largeBufs.Get().(*[]byte) }

// PutBuffer gives back a buffer from Buffer; b must not be used after.
func PutBuffer(b *[]byte) { largeBufs.Put(b) }

// copyBuffered copies src to dst through buffers, for conns that are not
// two TCP sockets (TLS, test pipes). It returns io.EOF when src ended.
func (h *half) copyBuffered() error {
	retry := isTCP(h.dst)
	small := make([]byte, smallBuf)
	var large *[]byte
	defer func() {
		if large != nil {
			largeBufs.Put(large)
		}
	}()
	buf := small
	for {
		n, err := h.src.Read(buf)
		if n > 0 {
			h.sp.touch() // a read is activity too: see splicer.last
			if werr := h.writeAll(buf[:n], retry); werr != nil {
				return werr
			}
		}
		if err != nil {
			if h.sp.expired(err, h.src.SetReadDeadline) {
				continue
			}
			return err
		}
		switch {
		case n >= smallBuf && large == nil:
			large = largeBufs.Get().(*[]byte)
			buf = *large
		case n < smallBuf && large != nil:
			largeBufs.Put(large)
			large, buf = nil, small
		}
	}
}
