package rules

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"golang.org/x/net/idna"
)

// Errors returned by NormalizeHost, wrapped with the offending name.
var (
	// ErrEmptyHost means the name was empty (or only a dot, or "[]").
	ErrEmptyHost = errors.New("rules: empty host")
	// ErrInvalidHost means the name is neither a valid domain name nor an IP literal.
	ErrInvalidHost = errors.New("rules: invalid host")
)

// maxHostLen is the longest name in presentation form, without the final dot (RFC 1035).
const maxHostLen = 253

// idnaProfile converts international names to Punycode. It maps like a lookup
// (case folding, width mapping) but does not apply the STD3 rules, so that
// real-world names with '_' (DKIM, SRV-like hosts, sloppy CDNs) still pass.
var idnaProfile = idna.New(
	idna.MapForLookup(),
	idna.Transitional(false),
	idna.BidiRule(),
	idna.StrictDomainName(false),
	idna.CheckHyphens(false),
	idna.VerifyDNSLength(true),
)

// NormalizeHost returns the canonical form of a destination host, the form
// every list entry, pattern and request is compared in: lower case, without
// a trailing dot and without [] around an IPv6 literal; international names
// in Punycode ("bücher.example" → "xn--bcher-kva.example"); IP literals
// canonical, with IPv4-mapped IPv6 unmapped ("::ffff:10.0.0.1" → "10.0.0.1")
// and IPv6 compressed. Labels may contain '_'. An already normalized ASCII
// name is returned as is, without allocating.
//
// An empty name, a name with an empty label, a label over 63 bytes, a name
// over 253 bytes, characters that cannot appear in a host name, IPv6 zones,
// names whose last label is numeric but which are not IPv4 addresses, and
// every other name that the C library's inet_aton reads as an IPv4 address
// ("0x7f000002", "127.0.0.0x2", "0x7f.0x2", "0177.1": hex, octal and
// short forms) are errors wrapping ErrEmptyHost or ErrInvalidHost. Such a
// name would otherwise pass the rules as a name and reach an address.
func NormalizeHost(s string) (string, error) {
	if normalizedASCII(s) {
		return s, nil
	}
	return normalizeSlow(s)
}

// normalizedASCII reports whether s is already in normal form: a valid
// lower-case ASCII name, or a canonical IPv4 literal. It does not allocate.
func normalizedASCII(s string) bool {
	if len(s) == 0 || len(s) > maxHostLen {
		return false
	}
	labelLen := 0
	lastNumeric := true // is the current label all digits so far
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '.':
			if labelLen == 0 {
				return false
			}
			labelLen = 0
			lastNumeric = true
			continue
		case 'a' <= c && c <= 'z', c == '-', c == '_':
			lastNumeric = false
		case '0' <= c && c <= '9':
		default:
			return false
		}
		labelLen++
		if labelLen > 63 {
			return false
		}
	}
	if labelLen == 0 { // trailing dot
		return false
	}
	if lastNumeric {
		// Looks like an IPv4 literal: normal only if canonical.
		a, err := netip.ParseAddr(s)
		return err == nil && a.Is4()
	}
	// inet_aton wants a digit first; most names start with a letter.
	return s[0] > '9' || !inetAton(s)
}

// inetAton reports whether glibc's inet_aton could read s as an IPv4
// address: one to four parts separated by dots, each a number in C
// notation (0x1f hex, 017 octal, 15 decimal), the last part filling the
// remaining bytes ("127.1" is 127.0.0.1, "0x7f000001" too). Values are not
// checked: C libraries differ on overflow, and refusing a name that no
// host uses costs nothing. Trailing white space, which inet_aton also
// accepts, never reaches here.
func inetAton(s string) bool {
	parts := 0
	for i := 0; ; {
		if i >= len(s) || s[i] < '0' || s[i] > '9' {
			return false
		}
		hex, digits := false, 0
		if s[i] == '0' {
			i++
			digits = 1
			if i < len(s) && (s[i] == 'x' || s[i] == 'X') {
				hex, digits = true, 0
				i++
			}
		}
		for ; i < len(s); i++ {
			c := s[i]
			if '0' <= c && c <= '9' || hex && ('a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				digits++
				continue
			}
			break
		}
		if digits == 0 {
			return false
		}
		parts++
		if i == len(s) {
			return true
		}
		if s[i] != '.' || parts > 3 {
			return false
		}
		i++
	}
}
func normalizeSlow(s string) (string, error) {
	h := strings.TrimSpace(s)
	if strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") {
		h = h[1 : len(h)-1]
		a, err := netip.ParseAddr(h)
		if err != nil || !a.Is6() || a.Zone() != "" {
			return "", fmt.Errorf("%w %q: not an IPv6 literal", ErrInvalidHost, s)
		}
		return a.Unmap().String(), nil
	}
	h = strings.TrimSuffix(h, ".")
	if h == "" {
		return "", ErrEmptyHost
	}
	if strings.IndexByte(h, ':') >= 0 {
		a, err := netip.ParseAddr(h)
		if err != nil || a.Zone() != "" {
			return "", fmt.Errorf("%w %q: not an IP address", ErrInvalidHost, s)
		}
		return a.Unmap().String(), nil
	}
	ascii := true
	for i := 0; i < len(h); i++ {
		if h[i] >= 0x80 {
			ascii = false
			break
		}
	}
	if ascii {
		h = strings.ToLower(h)
	} else {
		var err error
		h, err = idnaProfile.ToASCII(h)
		if err != nil {
			return "", fmt.Errorf("%w %q: %v", ErrInvalidHost, s, err)
		}
		h = strings.ToLower(strings.TrimSuffix(h, "."))
	}
	if normalizedASCII(h) {
		return h, nil
	}
	if h == "" {
		return "", ErrEmptyHost
	}
	return "", fmt.Errorf("%w %q", ErrInvalidHost, s)
}
