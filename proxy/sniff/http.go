package sniff

import (
	"fmt"
	"net"
	"strings"
)

// tri is a three-valued answer about a prefix of the client's bytes.
type tri uint8

const (
	no tri = iota
	maybe
	yes
)

// maxMethod bounds the method token of a request line.
const maxMethod = 24

// isRequestLine reports whether buf starts like an HTTP/1.x request line: a
// method token of capital letters (and '-' or '_') followed by a space.
func isRequestLine(buf []byte) tri {
	for i, c := range buf {
		switch {
		case 'A' <= c && c <= 'Z', c == '-', c == '_':
			if i >= maxMethod {
				return no
			}
		case c == ' ' && i > 0:
			return yes
		default:
			return no
		}
	}
	return maybe
}

// requestHost returns the host a request head is addressed to: the host of
// an absolute-form or authority-form request target, or the Host header.
// Several different hosts are ErrAmbiguous.
func requestHost(head []byte) (string, error) {
	lines := strings.Split(strings.TrimRight(string(head), "\r\n"), "\n")
	parts := strings.Split(strings.TrimSuffix(lines[0], "\r"), " ")
	if len(parts) != 3 || (parts[2] != "HTTP/1.1" && parts[2] != "HTTP/1.0") {
		return "", fmt.Errorf("%w: request line %.64q", ErrMalformed, lines[0])
	}
	var hosts []string
	target := parts[1]
	switch {
	case parts[0] == "CONNECT":
		hosts = append(hosts, target)
	case strings.HasPrefix(target, "/") || target == "*":
	default: // absolute form: scheme://authority/path
		_, rest, ok := strings.Cut(target, "://")
		if !ok {
			return "", fmt.Errorf("%w: request target %.64q", ErrMalformed, target)
		}
		if i := strings.IndexAny(rest, "/?#"); i >= 0 {
			rest = rest[:i]
		}
		if i := strings.LastIndexByte(rest, '@'); i >= 0 {
			rest = rest[i+1:]
		}
		hosts = append(hosts, rest)
	}
	for _, l := range lines[1:] {
		k, v, ok := strings.Cut(l, ":")
		if !ok || !strings.EqualFold(strings.TrimSpace(k), "host") {
			continue
		}
		hosts = append(hosts, strings.TrimSpace(v))
	}
	name := ""
	for _, h := range hosts {
		h = stripPort(h)
		if h == "" || !printable([]byte(h)) {
			return "", fmt.Errorf("%w: host %.64q", ErrMalformed, h)
		}
		if name != "" && !strings.EqualFold(strings.TrimSuffix(name, "."), strings.TrimSuffix(h, ".")) {
			return "", fmt.Errorf("%w: %.64q and %.64q", ErrAmbiguous, name, h)
		}
		name = h
	}
	if name == "" {
		return "", ErrNoName
	}
	return name, nil
}

// stripPort returns the host of host[:port], without the brackets of an
// IPv6 literal.
func stripPort(hp string) string {
	if h, _, err := net.SplitHostPort(hp); err == nil {
		return h
	}
	if strings.HasPrefix(hp, "[") && strings.HasSuffix(hp, "]") {
		return hp[1 : len(hp)-1]
	}
	return hp
}
