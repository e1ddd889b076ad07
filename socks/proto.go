package socks

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"strconv"
)

// Protocol versions and constants from RFC 1928 (SOCKS5), RFC 1929
// (username/password authentication) and the SOCKS4 / SOCKS4a protocol
// descriptions.
const (
	socks5Version = 0x05
	socks4Version = 0x04
	authVersion   = 0x01 // RFC 1929 subnegotiation version

	methodNoAuth       = 0x00 // NO AUTHENTICATION REQUIRED
	methodUserPass     = 0x02 // USERNAME/PASSWORD
	methodNoAcceptable = 0xFF // NO ACCEPTABLE METHODS

	cmdConnect      = 0x01 // CONNECT
	cmdBind         = 0x02 // BIND
	cmdUDPAssociate = 0x03 // UDP ASSOCIATE

	atypIPv4   = 0x01 // IP V4 address
	atypDomain = 0x03 // DOMAINNAME
	atypIPv6   = 0x04 // IP V6 address

	authSuccess = 0x00 // RFC 1929 STATUS success
	authFailure = 0x01 // RFC 1929 STATUS failure (any non-zero value)
)

// replyCode is the REP field of a SOCKS5 reply (RFC 1928 section 6).
type replyCode byte

const (
	repSucceeded            replyCode = 0x00 // succeeded
	repGeneralFailure       replyCode = 0x01 // general SOCKS server failure
	repNotAllowed           replyCode = 0x02 // connection not allowed by ruleset
	repNetworkUnreachable   replyCode = 0x03 // Network unreachable
	repHostUnreachable      replyCode = 0x04 // Host unreachable
	repConnectionRefused    replyCode = 0x05 // Connection refused
	repTTLExpired           replyCode = 0x06 // TTL expired (we use it for timeouts)
	repCommandNotSupported  replyCode = 0x07 // Command not supported
	repAddrTypeNotSupported replyCode = 0x08 // Address type not supported
)

// SOCKS4 reply codes (CD field of the reply).
const (
	socks4Granted  = 0x5A // request granted
	socks4Rejected = 0x5B // request rejected or failed
)

// maxString bounds the NUL-terminated strings of a SOCKS4 request.
const maxString = 255

var (
	// ErrVersion means the client's first byte was neither 0x05 nor 0x04,
	// or a subnegotiation carried the wrong version.
	ErrVersion = errors.New("socks: unsupported version")
	// ErrCommand means the client asked for a command this server does not serve.
	ErrCommand = errors.New("socks: unsupported command")
	// ErrAddrType means the request carried an unknown address type.
	ErrAddrType = errors.New("socks: unsupported address type")
	// ErrAddress means the request carried an empty or malformed address.
	ErrAddress = errors.New("socks: malformed address")
	// ErrNoMethod means no authentication method offered by the client is acceptable.
	ErrNoMethod = errors.New("socks: no acceptable authentication method")
	// ErrAuth means the client's user name or password was rejected.
	ErrAuth = errors.New("socks: authentication failed")
	// ErrTooLong means a SOCKS4 user id or host name exceeded 255 bytes.
	ErrTooLong = errors.New("socks: field too long")
	// ErrFragment means a UDP datagram was a fragment, which is not supported.
	ErrFragment = errors.New("socks: udp fragments are not supported")
	// ErrShort means a UDP datagram ended inside its header.
	ErrShort = errors.New("socks: short udp header")
)

// request is a parsed SOCKS5 or SOCKS4 request.
type request struct {
	cmd  byte
	host string // an IP literal for IP address types, the name as sent otherwise
	name bool   // host came as a domain name
	port uint16
	user string // SOCKS4 user id (not a credential)
}

func (r request) addr() string { return net.JoinHostPort(r.host, strconv.Itoa(int(r.port))) }

// readGreeting reads a SOCKS5 greeting: VER NMETHODS METHODS.
func readGreeting(r io.Reader) ([]byte, error) {
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	if hdr[0] != socks5Version {
		return nil, ErrVersion
	}
	methods := make([]byte, hdr[1])
	if _, err := io.ReadFull(r, methods); err != nil {
		return nil, err
	}
	return methods, nil
}

// readUserPass reads an RFC 1929 request: VER ULEN UNAME PLEN PASSWD.
func readUserPass(r io.Reader) (user, password string, err error) {
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return "", "", err
	}
	if hdr[0] != authVersion {
		return "", "", ErrVersion
	}
	u := make([]byte, int(hdr[1])+1) // name and PLEN
	if _, err := io.ReadFull(r, u); err != nil {
		return "", "", err
	}
	p := make([]byte, u[len(u)-1])
	if _, err := io.ReadFull(r, p); err != nil {
		return "", "", err
	}
	return string(u[:len(u)-1]), string(p), nil
}

// readRequest reads a SOCKS5 request: VER CMD RSV ATYP DST.ADDR DST.PORT.
// An unknown command is reported with ErrCommand after the whole request
// was read, so the caller can still answer 0x07.
func readRequest(r io.Reader) (request, error) {
	var hdr [3]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return request{}, err
	}
	if hdr[0] != socks5Version {
		return request{}, ErrVersion
	}
	req := request{cmd: hdr[1]}
	host, name, port, err := readAddr(r)
	if err != nil {
		return req, err
	}
	req.host, req.name, req.port = host, name, port
	switch req.cmd {
	case cmdConnect, cmdUDPAssociate:
		return req, nil
	}
	return req, ErrCommand
}

// readAddr reads ATYP DST.ADDR DST.PORT.
func readAddr(r io.Reader) (host string, name bool, port uint16, err error) {
	var b [1 + 255 + 2]byte
	if _, err := io.ReadFull(r, b[:1]); err != nil {
		return "", false, 0, err
	}
	var n int
	switch b[0] {
	case atypIPv4:
		n = 4
	case atypIPv6:
		n = 16
	case atypDomain:
		if _, err := io.ReadFull(r, b[:1]); err != nil {
			return "", false, 0, err
		}
		n = int(b[0])
		name = true
	default:
		return "", false, 0, ErrAddrType
	}
	if _, err := io.ReadFull(r, b[:n+2]); err != nil {
		return "", false, 0, err
	}
	port = binary.BigEndian.Uint16(b[n:])
	switch {
	case name && n == 0:
		return "", false, 0, ErrAddress
	case name:
		host = string(b[:n])
	case n == 4:
		host = netip.AddrFrom4([4]byte(b[:4])).String()
	default:
		host = netip.AddrFrom16([16]byte(b[:16])).Unmap().String()
	}
	return host, name, port, nil
}

// readSocks4 reads a SOCKS4 or SOCKS4a request:
// VN CD DSTPORT DSTIP USERID NUL [HOSTNAME NUL].
// The server reads it through a buffer (see afterHandshake): what the
// client sends after the request is handed to the tunnel, never lost.
func readSocks4(r io.Reader) (request, error) {
	var b [8]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return request{}, err
	}
	if b[0] != socks4Version {
		return request{}, ErrVersion
	}
	req := request{cmd: b[1], port: binary.BigEndian.Uint16(b[2:4])}
	ip := netip.AddrFrom4([4]byte(b[4:8]))
	user, err := readCString(r)
	if err != nil {
		return req, err
	}
	req.user = user
	// SOCKS4a: 0.0.0.x with x != 0 means "the name follows".
	if b[4] == 0 && b[5] == 0 && b[6] == 0 && b[7] != 0 {
		host, err := readCString(r)
		if err != nil {
			return req, err
		}
		if host == "" {
			return req, ErrAddress
		}
		req.host, req.name = host, true
	} else {
		req.host = ip.String()
	}
	if req.cmd != cmdConnect {
		return req, ErrCommand
	}
	return req, nil
}

// readCString reads a NUL-terminated string of at most maxString bytes.
func readCString(r io.Reader) (string, error) {
	var buf [maxString]byte
	var c [1]byte
	for n := 0; ; n++ {
		if _, err := io.ReadFull(r, c[:]); err != nil {
			return "", err
		}
		if c[0] == 0 {
			return string(buf[:n]), nil
		}
		if n == maxString {
			return "", ErrTooLong
		}
		buf[n] = c[0]
	}
}

// parseUDPHeader splits a SOCKS5 UDP datagram (RFC 1928 section 7):
// RSV(2) FRAG ATYP DST.ADDR DST.PORT DATA.
func parseUDPHeader(b []byte) (host string, name bool, port uint16, payload []byte, err error) {
	if len(b) < 4 {
		return "", false, 0, nil, ErrShort
	}
	if b[2] != 0 {
		return "", false, 0, nil, ErrFragment
	}
	var n, off int
	switch b[3] {
	case atypIPv4:
		n, off = 4, 4
	case atypIPv6:
		n, off = 16, 4
	case atypDomain:
		if len(b) < 5 {
			return "", false, 0, nil, ErrShort
		}
		n, off, name = int(b[4]), 5, true
	default:
		return "", false, 0, nil, ErrAddrType
	}
	if len(b) < off+n+2 {
		return "", false, 0, nil, ErrShort
	}
	a := b[off : off+n]
	port = binary.BigEndian.Uint16(b[off+n:])
	switch {
	case name && n == 0:
		return "", false, 0, nil, ErrAddress
	case name:
		host = string(a)
	case n == 4:
		host = netip.AddrFrom4([4]byte(a)).String()
	default:
		host = netip.AddrFrom16([16]byte(a)).Unmap().String()
	}
	return host, name, port, b[off+n+2:], nil
}

// appendAddrPort appends ATYP BND.ADDR BND.PORT for ap; an invalid ap is
// written as 0.0.0.0:0.
func appendAddrPort(b []byte, ap netip.AddrPort) []byte {
	a := ap.Addr().Unmap()
	switch {
	case a.Is4():
		s := a.As4()
		b = append(b, atypIPv4, s[0], s[1], s[2], s[3])
	case a.Is6():
		b = append(b, atypIPv6)
		s := a.As16()
		b = append(b, s[:]...)
	default:
		b = append(b, atypIPv4, 0, 0, 0, 0)
	}
	return binary.BigEndian.AppendUint16(b, ap.Port())
}

// appendUDPHeader appends the header of a datagram from src to the client.
func appendUDPHeader(b []byte, src netip.AddrPort) []byte {
	return appendAddrPort(append(b, 0, 0, 0), src)
}

// reply5 builds a SOCKS5 reply carrying the bound address.
func reply5(code replyCode, bound netip.AddrPort) []byte {
	return appendAddrPort([]byte{socks5Version, byte(code), 0}, bound)
}

// reply4 builds a SOCKS4 reply: VN=0 CD DSTPORT DSTIP.
func reply4(code byte, bound netip.AddrPort) []byte {
	b := []byte{0, code}
	b = binary.BigEndian.AppendUint16(b, bound.Port())
	a := bound.Addr().Unmap()
	if a.Is4() {
		s := a.As4()
		return append(b, s[:]...)
	}
	return append(b, 0, 0, 0, 0)
}

// addrPort converts a net.Addr of a TCP or UDP socket.
func addrPort(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.AddrPort()
	case *net.UDPAddr:
		return a.AddrPort()
	case nil:
		return netip.AddrPort{}
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}
