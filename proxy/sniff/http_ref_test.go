package sniff

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// requestHostRef is requestHost as it was written first, on strings split
// into slices: the specification the in-place version must match.
func requestHostRef(head []byte) (string, error) {
	lines := strings.Split(strings.TrimRight(string(head), "\r\n"), "\n")
	var hosts []string
	if f := strings.Fields(lines[0]); len(f) == 3 {
		method, target := f[0], f[1]
		switch {
		case strings.EqualFold(method, "CONNECT"):
			hosts = append(hosts, target)
		case strings.HasPrefix(target, "/") || target == "*":
		default:
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

// isRequestLineRef is isRequestLine's test of a complete first line as
// written first, with bytes.Fields.
func isRequestLineRef(buf []byte) tri {
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
			return yes
		}
		f := bytes.Fields(line)
		if len(f) < 2 || !bytes.HasPrefix(f[len(f)-1], []byte("HTTP/")) {
			return no
		}
		return yes
	}
	return maybe
}

var requestHeads = []string{
	"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n",
	"GET http://a.test/x HTTP/1.1\r\nHost: a.test\r\n\r\n",
	"GET http://a.test/x HTTP/1.1\r\nHost: b.test\r\n\r\n",
	"GET http://u:p@a.test:81/x?q#f HTTP/1.1\r\n\r\n",
	"GET a.test HTTP/1.1\r\n\r\n",
	"CONNECT a.test:443 HTTP/1.1\r\nHost: A.TEST.\r\n\r\n",
	"connect [::1]:443 HTTP/1.1\r\n\r\n",
	"GET / HTTP/1.1\r\nhost:a.test\r\nHOST :  a.test:80 \r\n\r\n",
	"GET / HTTP/1.1\r\nHost: \r\n\r\n",
	"GET / HTTP/1.1\r\nHost: [::1\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a.test:1:2\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\x01b\r\n\r\n",
	"GET / HTTP/1.1\r\nX: y\r\n\r\n",
	"GET  /  HTTP/1.1  extra\r\nHost: a.test\r\n\r\n",
	"GET\t*\tHTTP/1.1\nHost: a.test\n\n",
	"GET /\u00a0x HTTP/1.1\r\nHost:\u00a0a.test\u00a0\r\n\r\n",
	"GET / HTTP/1.1\r\n\r\nHost: late.test\r\n",
	"\r\n\r\n",
	"",
	"GET / HTTP/1.1",
}

// TestRequestHostMatchesReference: the in-place requestHost and
// isRequestLine answer as the versions on split strings do.
func TestRequestHostMatchesReference(t *testing.T) {
	for _, h := range requestHeads {
		checkRequestHost(t, []byte(h))
	}
}

func checkRequestHost(t *testing.T, in []byte) {
	t.Helper()
	name, err := requestHost(in)
	wantName, wantErr := requestHostRef(in)
	if name != wantName || fmt.Sprint(err) != fmt.Sprint(wantErr) || !errors.Is(err, errors.Unwrap(wantErr)) && err != wantErr {
		t.Errorf("requestHost(%q) = %q, %v; want %q, %v", in, name, err, wantName, wantErr)
	}
	if got, want := isRequestLine(in), isRequestLineRef(in); got != want {
		t.Errorf("isRequestLine(%q) = %v, want %v", in, got, want)
	}
}

// FuzzRequestHost compares requestHost with its reference on any input.
func FuzzRequestHost(f *testing.F) {
	for _, h := range requestHeads {
		f.Add([]byte(h))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) > MaxBytes {
			return
		}
		checkRequestHost(t, in)
	})
}

// TestRequestHostAllocs: reading the host of a typical request head
// allocates its one host's string (and no slices of lines or fields).
func TestRequestHostAllocs(t *testing.T) {
	head := []byte("GET /index.html HTTP/1.1\r\nHost: www.a.test\r\nUser-Agent: curl/8\r\nAccept: */*\r\n\r\n")
	if n := testing.AllocsPerRun(100, func() { requestHost(head) }); n > 1 {
		t.Errorf("%.0f allocations per head, want at most 1", n)
	}
}
