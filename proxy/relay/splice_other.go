//go:build !linux

package relay

// splice is not available: the copy goes through buffers.
func (h *half) splice() (ok bool, err error) { return false, nil }

// pump is the state of a splice loop, which this platform does not have.
type pump struct{}

// unparkAll has nothing to do: directions never park on this platform.
func (sp *splicer) unparkAll() {}

// canPark is false: directions never park on this platform.
func (h *half) canPark() bool { return false }

// parkAfter is unused on this platform.
const parkAfter = 0

// lazyWriteDeadline is false: run sets dst's write deadline at the start.
const lazyWriteDeadline = false

// writeRaw is not used on this platform: dst is written as a net.Conn.
func (h *half) writeRaw(b []byte) (int, error) { return h.dst.Write(b) }
