package pac

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestFile(t *testing.T) {
	c := Config{Bypass: []string{"intranet.example", "*.corp.example", "10.0.0.0/8", "fd00::/8", "192.0.2.1"}}
	f := c.File("gw.example:3128")
	for _, want := range []string{
		`return "PROXY gw.example:3128; SOCKS5 gw.example:3128";`,
		`if (host == "intranet.example" || dnsDomainIs(host, ".intranet.example")) return "DIRECT";`,
		`if (dnsDomainIs(host, ".corp.example")) return "DIRECT";`,
		`if (ip4 && isInNet(host, "10.0.0.0", "255.0.0.0")) return "DIRECT";`,
		`isInNetEx(host, "fd00::/8")`,
		`if (host == "192.0.2.1") return "DIRECT";`,
		`(ip4 && /^127\./.test(host)) || host == "::1") return "DIRECT";`,
	} {
		if !strings.Contains(f, want) {
			t.Errorf("PAC lacks %s:\n%s", want, f)
		}
	}
	if strings.Contains(f, `DIRECT";`+"\n}") || strings.Count(f, "DIRECT") != 6 {
		t.Errorf("proxied traffic may go DIRECT without fallback_direct:\n%s", f)
	}
	c = Config{Proxies: []string{"gw1.example:3128", "gw2.example:3128"}, FallbackDirect: true}
	if f := c.File("ignored.example:1"); !strings.Contains(f, `return "PROXY gw1.example:3128; PROXY gw2.example:3128; SOCKS5 gw1.example:3128; SOCKS5 gw2.example:3128; DIRECT";`) {
		t.Errorf("replicas with fallback:\n%s", f)
	}
}

// TestNoInjection: text that could end a JavaScript string never reaches
// the script, whether from the config or from a client's Host header.
func TestNoInjection(t *testing.T) {
	bad := `x"); alert(1); ("`
	f := Config{Proxies: []string{bad + ":3128"}, Bypass: []string{bad, "ok.example"}}.File()
	if strings.Contains(f, "alert") || !strings.Contains(f, "ok.example") {
		t.Errorf("unvalidated entries reached the PAC file:\n%s", f)
	}
	if !strings.Contains(f, `return "PROXY 0.0.0.0:9";`) {
		t.Errorf("with no valid proxy the PAC must refuse, not go DIRECT:\n%s", f)
	}
	local := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 3128}
	for host, want := range map[string]string{
		"gw.school.example:3128": "gw.school.example:3128",
		"gw.school.example":      "gw.school.example:3128",
		"[::1]:8080":             "[::1]:8080",
		bad:                      "127.0.0.1:3128",
		"a b:3128":               "127.0.0.1:3128",
		"":                       "127.0.0.1:3128",
		"evil.example:99999":     "127.0.0.1:3128",
	} {
		r := httptest.NewRequest(http.MethodGet, "/proxy.pac", nil)
		r.Host = host
		r = r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, net.Addr(local)))
		if got := Reached(r); got != want {
			t.Errorf("Host %q: Reached = %q, want %q", host, got, want)
		}
		w := httptest.NewRecorder()
		if !(Config{}).Handler(w, r) {
			t.Fatalf("Handler did not serve %s", r.URL.Path)
		}
		if ct := w.Header().Get("Content-Type"); ct != ContentType || !strings.Contains(w.Body.String(), `"PROXY `+want+`; SOCKS5 `+want+`"`) {
			t.Errorf("Host %q: %s\n%s", host, ct, w.Body.String())
		}
	}
	r := httptest.NewRequest(http.MethodGet, "/other", nil)
	if (Config{}).Handler(httptest.NewRecorder(), r) {
		t.Error("Handler served /other")
	}
}
