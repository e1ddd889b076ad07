//go:build !linux

package server

import "net/netip"

// fromSelf cannot tell on this system whether a connection comes from
// this process; it reports false. Keep the admin listener's address out
// of the proxy's reach with a rule there (README: Admin endpoints).
func fromSelf(peer, local netip.AddrPort) (bool, error) { return false, nil }
