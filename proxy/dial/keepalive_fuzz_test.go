package dial

import (
	"bufio"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// FuzzWriteRequestAsRequestWrite: for any request the front end can hand
// the pool (a GET or HEAD to an http:// URL, any host, path, query,
// User-Agent and header), the head the pool writes is byte for byte the
// one Request.Write writes, and both fail or neither does.
func FuzzWriteRequestAsRequestWrite(f *testing.F) {
	f.Add(true, "example.test:8080", "/a/b?q=1&r=%20x", "", "curl/8.0", true, "Accept", "*/*")
	f.Add(false, "[::1]:80", "/%7Euser/", "forged", "  ua\t", true, "X-Dup", "")
	f.Add(true, "h", "/", "", "caf\u00e9", false, "x-lower", "v\r\nX-Injected: 1")
	f.Add(true, "h", "/", "h\r\nX: y", "", true, "Cookie", "a=b; c=d")
	f.Add(true, "[fe80::1%25eth0]:80", "/", "", "", true, "X", "\x00\x7f")
	f.Fuzz(func(t *testing.T, get bool, host, path, hostHeader, ua string, hasUA bool, key, value string) {
		u, err := url.Parse("http://" + host + path)
		if err != nil || u.Scheme != "http" {
			return
		}
		method := http.MethodHead
		if get {
			method = http.MethodGet
		}
		req := &http.Request{Method: method, URL: u, Host: hostHeader, Header: http.Header{}, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1}
		if hasUA {
			req.Header["User-Agent"] = []string{ua}
		}
		if key != "" {
			req.Header[key] = append(req.Header[key], value)
		}
		var want, got strings.Builder
		bw := bufio.NewWriter(&want)
		werr := req.Write(bw)
		bw.Flush()
		bw = bufio.NewWriter(&got)
		gerr := writeRequest(bw, req)
		bw.Flush()
		if (werr == nil) != (gerr == nil) || (werr == nil && got.String() != want.String()) {
			t.Errorf("wrote\n%q (%v)\nRequest.Write\n%q (%v)", got.String(), gerr, want.String(), werr)
		}
	})
}
