package sniff

import (
	"bytes"
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

// isRequestLine reports whether buf starts like an HTTP/1.x request line:
// a method token (RFC 9110 tchar, any case: some servers take "get" or
// extension methods) followed by a space or tab, and, once the first line
// is complete, a last field that starts with "HTTP/". Servers differ in how
// strictly they read a request line, so this is lenient: whatever a server
// might take as a request is read for its Host.
func isRequestLine(buf []byte) tri {
	for i, c := range buf {
		switch {
		case isTokenChar(c):
			if i >= maxMethod {
				return no
			}
			continue
		case (c == ' ' || c == '\t') && i > 0:
		default:
			return no
		}
		line, _, complete := bytes.Cut(buf, []byte("\n"))
		if !complete {
			return yes // the head must still end within the bounds
		}
		f := bytes.Fields(line)
		if len(f) < 2 || !bytes.HasPrefix(f[len(f)-1], []byte("HTTP/")) {
			return no
		}
		return yes
	}
	return maybe
}

// isTokenChar reports whether c is a tchar of RFC 9110 section 5.6.2.
func isTokenChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// requestHost returns the host a request head is addressed to: the host of
// an absolute-form or authority-form request target, or the Host header.
// Several different hosts are ErrAmbiguous. A request line that does not
// have the three usual fields still has its Host headers read.
func requestHost(head []byte) (string, error) {
	lines := strings.Split(strings.TrimRight(string(head), "\r\n"), "\n")
	var hosts []string
	if f := strings.Fields(lines[0]); len(f) == 3 {
		method, target := f[0], f[1]
		switch {
		case strings.EqualFold(method, "CONNECT"):
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
