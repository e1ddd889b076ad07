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
		n, last := 0, []byte(nil)
		for w := range bytes.FieldsSeq(line) {
			n, last = n+1, w
		}
		if n < 2 || !bytes.HasPrefix(last, httpVersion) {
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
//
// It reads head in place (its lines and fields are iterated, not split
// into slices) and copies only the hosts it finds: it runs on the first
// bytes of every sniffed tunnel.
func requestHost(head []byte) (string, error) {
	head = bytes.TrimRight(head, "\r\n")
	var buf [4][]byte
	hosts := buf[:0]
	line, rest, more := bytes.Cut(head, newline)
	var f [3][]byte
	n := 0
	for w := range bytes.FieldsSeq(line) {
		if n < len(f) {
			f[n] = w
		}
		n++
	}
	if n == 3 {
		method, target := f[0], f[1]
		switch {
		case bytes.EqualFold(method, connectMethod):
			hosts = append(hosts, target)
		case bytes.HasPrefix(target, slash) || string(target) == "*":
		default: // absolute form: scheme://authority/path
			_, authority, ok := bytes.Cut(target, schemeSep)
			if !ok {
				return "", fmt.Errorf("%w: request target %.64q", ErrMalformed, target)
			}
			if i := bytes.IndexAny(authority, "/?#"); i >= 0 {
				authority = authority[:i]
			}
			if i := bytes.LastIndexByte(authority, '@'); i >= 0 {
				authority = authority[i+1:]
			}
			hosts = append(hosts, authority)
		}
	}
	for more {
		line, rest, more = bytes.Cut(rest, newline)
		k, v, ok := bytes.Cut(line, colon)
		if !ok || !bytes.EqualFold(bytes.TrimSpace(k), hostHeader) {
			continue
		}
		hosts = append(hosts, bytes.TrimSpace(v))
	}
	name := ""
	for _, hb := range hosts {
		h := stripPort(string(hb))
		if h == "" || !printable(h) {
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

var (
	newline       = []byte("\n")
	colon         = []byte(":")
	slash         = []byte("/")
	schemeSep     = []byte("://")
	connectMethod = []byte("CONNECT")
	hostHeader    = []byte("host")
	httpVersion   = []byte("HTTP/")
)

// stripPort returns the host of host[:port], without the brackets of an
// IPv6 literal.
func stripPort(hp string) string {
	if strings.IndexByte(hp, ':') < 0 {
		// No port: SplitHostPort would fail, allocating its error.
	} else if h, _, err := net.SplitHostPort(hp); err == nil {
		return h
	}
	if strings.HasPrefix(hp, "[") && strings.HasSuffix(hp, "]") {
		return hp[1 : len(hp)-1]
	}
	return hp
}
