package transparent

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ip6tSOOriginalDst is IP6T_SO_ORIGINAL_DST (linux/netfilter_ipv6/
// ip6_tables.h), which x/sys does not name: the same number as
// SO_ORIGINAL_DST, at level SOL_IPV6.
const ip6tSOOriginalDst = 80

// OriginalDst returns the destination a connection redirected by
// netfilter (nftables `redirect`, iptables REDIRECT or DNAT) was sent to
// before the redirect: SO_ORIGINAL_DST for IPv4, IP6T_SO_ORIGINAL_DST for
// IPv6, read from conntrack. A connection that was not redirected
// reports the listener's own address (which the server's guard refuses
// as a loop), or an error (ENOENT) when conntrack does not track it.
func OriginalDst(c *net.TCPConn) (netip.AddrPort, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, err
	}
	local, ok := c.LocalAddr().(*net.TCPAddr)
	if !ok {
		return netip.AddrPort{}, errors.New("transparent: not a TCP connection")
	}
	v4 := local.IP.To4() != nil
	var ap netip.AddrPort
	var serr error
	err = rc.Control(func(fd uintptr) {
		if v4 {
			// struct sockaddr_in fits in the 16 bytes of an IPv6Mreq.
			var m *unix.IPv6Mreq
			if m, serr = unix.GetsockoptIPv6Mreq(int(fd), unix.SOL_IP, unix.SO_ORIGINAL_DST); serr == nil {
				sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(m))
				port := uint16(sa.Port>>8 | sa.Port<<8) // network byte order
				ap = netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), port)
			}
			return
		}
		// struct sockaddr_in6 (28 bytes) fits in the 32 of an IPv6MTUInfo.
		var m *unix.IPv6MTUInfo
		if m, serr = unix.GetsockoptIPv6MTUInfo(int(fd), unix.SOL_IPV6, ip6tSOOriginalDst); serr == nil {
			sa := &m.Addr
			port := uint16(sa.Port>>8 | sa.Port<<8)
			ap = netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), port)
		}
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("transparent: original destination of %s: %w", c.RemoteAddr(), err)
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}
