package proxy

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice/filter"
	"github.com/sluiceproxy/sluice/proxy/dial"
	"github.com/sluiceproxy/sluice/proxy/relay"
)

// httpOrigin is an httptest server whose handler sees requests as they
// arrive at the origin.
func httpOrigin(t *testing.T, h http.HandlerFunc) (*httptest.Server, string) {
	t.Helper()
	o := httptest.NewServer(h)
	t.Cleanup(o.Close)
	_, port, _ := net.SplitHostPort(o.Listener.Addr().String())
	return o, port
}

func TestPlain(t *testing.T) {
	f := newFixture(t, nil)
	_, port := httpOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s %s", r.Host, r.URL.RequestURI())
	})
	c := f.client(t, nil)
	for _, tc := range []struct {
		name     string
		url      string
		code     int
		contains string
	}{
		{"allowed", "http://allowed.test:" + port + "/a?b=c", 200, "hello allowed.test:" + port + " /a?b=c"},
		{"allowed, host normalized", "http://ALLOWED.test.:" + port + "/", 200, "hello allowed.test:" + port + " /"},
		{"ip literal", "http://127.0.0.1:" + port + "/", 200, "hello 127.0.0.1:" + port},
		{"blocked", "http://blocked.test:" + port + "/", 403, "blocked.test"},
		{"blocked, other case", "http://BLOCKED.Test:" + port + "/", 403, "blocked.test"},
		{"refused", "http://127.0.0.1:1/", 502, "sluice: cannot reach 127.0.0.1:1: connection refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := c.Get(tc.url)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.code {
				t.Errorf("status = %d, want %d; body %q", resp.StatusCode, tc.code, body)
			}
			if !strings.Contains(string(body), tc.contains) {
				t.Errorf("body %q does not contain %q", body, tc.contains)
			}
			if tc.code == 403 {
				if got := resp.Header.Get(HeaderBlock); got != "rule 3" {
					t.Errorf("%s = %q", HeaderBlock, got)
				}
				for _, leak := range []string{"script", "alert", "sluice.yaml", "yaml:12"} {
					if strings.Contains(string(body), leak) {
						t.Errorf("block page shows the rule (%q): %s", leak, body)
					}
				}
				for _, want := range []string{"social", "sluice", "rule 3"} {
					if !strings.Contains(string(body), want) {
						t.Errorf("block page lacks %q", want)
					}
				}
			}
		})
	}
	if got := f.policy.last(); got.Port != 1 || got.Host != "127.0.0.1" || got.Client != netip.MustParseAddr("127.0.0.1") || got.Time.IsZero() {
		t.Errorf("last filter.Request = %+v", got)
	}
}

func TestPlainKeepAlive(t *testing.T) {
	f := newFixture(t, nil)
	o := newOrigin(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			r, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			io.Copy(io.Discard, r.Body)
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	c := f.client(t, nil)
	var clientConns sync.Map
	for i := range 5 {
		req, _ := http.NewRequest("GET", "http://ka.test:"+o.port()+"/"+strconv.Itoa(i), nil)
		ctx := withConnTrace(req.Context(), &clientConns)
		resp, err := c.Do(req.WithContext(ctx))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if n := o.accepts.Load(); n != 1 {
		t.Errorf("origin accepted %d connections for 5 requests, want 1 (keep-alive)", n)
	}
	n := 0
	clientConns.Range(func(any, any) bool { n++; return true })
	if n != 1 {
		t.Errorf("client used %d connections to the proxy, want 1", n)
	}
}

func TestNilPolicyBlocks(t *testing.T) {
	f := newFixture(t, func(s *Server) { s.Policy = nil })
	_, port := httpOrigin(t, func(w http.ResponseWriter, r *http.Request) {})
	resp, err := f.client(t, nil).Get("http://allowed.test:" + port + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 403 || f.dial.n.Load() != 0 {
		t.Errorf("status %d, %d dials; want 403 and no dial", resp.StatusCode, f.dial.n.Load())
	}
}

func TestNotAProxyRequest(t *testing.T) {
	f := newFixture(t, nil)
	c := f.raw(t)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: "+f.addr+"\r\n\r\n")
	resp := readResponse(t, bufio.NewReader(c), "GET")
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("status = %d, want 400", resp.StatusCode)
	}
	if f.dial.n.Load() != 0 {
		t.Error("an origin-form request was dialed")
	}
}

func TestConnect(t *testing.T) {
	f := newFixture(t, nil)
	o := newOrigin(t, echo)
	for _, tc := range []struct {
		name, target string
		code         int
	}{
		{"allowed", "echo.test:" + o.port(), 200},
		{"blocked", "blocked.test:" + o.port(), 403},
		{"no port", "echo.test", 400},
		{"refused", "127.0.0.1:1", 502},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, dials := o.accepts.Load(), f.dial.n.Load()
			c := f.raw(t)
			fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", tc.target, tc.target)
			br := bufio.NewReader(c)
			resp := readResponse(t, br, "CONNECT")
			if resp.StatusCode != tc.code {
				t.Fatalf("status = %d, want %d", resp.StatusCode, tc.code)
			}
			switch tc.code {
			case 200:
				io.WriteString(c, "ping")
				buf := make([]byte, 4)
				if _, err := io.ReadFull(br, buf); err != nil || string(buf) != "ping" {
					t.Errorf("echo: %q, %v", buf, err)
				}
			case 403:
				body, _ := io.ReadAll(resp.Body)
				if resp.Header.Get(HeaderBlock) != "rule 3" || !strings.Contains(string(body), "blocked.test") ||
					strings.Contains(string(body), "script") || strings.Contains(string(body), "sluice.yaml") {
					t.Errorf("header %q, body %q", resp.Header.Get(HeaderBlock), body)
				}
				if o.accepts.Load() != before || f.dial.n.Load() != dials {
					t.Error("a blocked CONNECT reached the dialer or the origin")
				}
			case 502:
				body, _ := io.ReadAll(resp.Body)
				if strings.TrimSpace(string(body)) != "sluice: cannot reach 127.0.0.1:1: connection refused" {
					t.Errorf("body = %q", body)
				}
			}
		})
	}
}

// TestConnectEarlyData: bytes sent in the same write as the CONNECT (like a
// TLS ClientHello sent optimistically) reach the origin, first.
func TestConnectEarlyData(t *testing.T) {
	f := newFixture(t, nil)
	o := newOrigin(t, echo)
	c := f.raw(t)
	payload := "early bytes right behind the request"
	if _, err := fmt.Fprintf(c, "CONNECT echo.test:%s HTTP/1.1\r\nHost: echo.test\r\n\r\n%s", o.port(), payload); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	if resp := readResponse(t, br, "CONNECT"); resp.StatusCode != 200 {
		t.Fatalf("status = %d", resp.StatusCode)
	}
	io.WriteString(c, "+later")
	c.CloseWrite()
	got, err := io.ReadAll(br)
	if err != nil || string(got) != payload+"+later" {
		t.Errorf("echo = %q, %v", got, err)
	}
}

// TestConnectHalfClose: the client half-closes after its request and still
// receives the whole answer, which the origin sends after seeing EOF.
func TestConnectHalfClose(t *testing.T) {
	f := newFixture(t, nil)
	o := newOrigin(t, func(c net.Conn) {
		got, _ := io.ReadAll(c) // until the client's half-close arrives
		fmt.Fprintf(c, "you sent %d bytes", len(got))
	})
	c := f.raw(t)
	fmt.Fprintf(c, "CONNECT echo.test:%s HTTP/1.1\r\nHost: echo.test\r\n\r\n", o.port())
	br := bufio.NewReader(c)
	if resp := readResponse(t, br, "CONNECT"); resp.StatusCode != 200 {
		t.Fatalf("status = %d", resp.StatusCode)
	}
	io.WriteString(c, strings.Repeat("x", 100000))
	c.CloseWrite()
	got, err := io.ReadAll(br)
	if err != nil || string(got) != "you sent 100000 bytes" {
		t.Errorf("got %q, %v", got, err)
	}
}

func TestDialTimeout(t *testing.T) {
	f := newFixture(t, func(s *Server) {
		s.Dial = blackhole
		s.DialTimeout = 100 * time.Millisecond
	})
	t.Run("plain", func(t *testing.T) {
		resp, err := f.client(t, nil).Get("http://slow.test/")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusGatewayTimeout || strings.TrimSpace(string(body)) != "sluice: cannot reach slow.test:80: timed out" {
			t.Errorf("status %d, body %q", resp.StatusCode, body)
		}
	})
	t.Run("connect", func(t *testing.T) {
		c := f.raw(t)
		io.WriteString(c, "CONNECT slow.test:443 HTTP/1.1\r\nHost: slow.test:443\r\n\r\n")
		resp := readResponse(t, bufio.NewReader(c), "CONNECT")
		if resp.StatusCode != http.StatusGatewayTimeout {
			t.Errorf("status = %d, want 504", resp.StatusCode)
		}
	})
}

func TestDialErrorStatus(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		code int
		text string
	}{
		{"dns", &net.DNSError{Err: "no such host", Name: "x.test", IsNotFound: true}, 502, "name does not resolve"},
		{"typed timeout", &dial.Error{Kind: dial.KindTimeout, Addr: "x.test:80"}, 504, "timed out"},
		{"deadline", context.DeadlineExceeded, 504, "timed out"},
		{"upstream auth", &dial.Error{Kind: dial.KindUpstreamAuth, Addr: "x.test:80", Upstream: "office"}, 502, "via upstream office: upstream auth failed"},
		{"other", io.ErrUnexpectedEOF, 502, "connection failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, msg := dialFailure("x.test:80", tc.err)
			if code != tc.code || !strings.HasSuffix(msg, tc.text) {
				t.Errorf("got %d %q, want %d ...%q", code, msg, tc.code, tc.text)
			}
		})
	}
}

func TestHopByHopAndNoAddedHeaders(t *testing.T) {
	for _, anon := range []bool{false, true} {
		t.Run("anonymize="+strconv.FormatBool(anon), func(t *testing.T) {
			f := newFixture(t, func(s *Server) { s.Anonymize = func(string) bool { return anon } })
			var seen http.Header
			_, port := httpOrigin(t, func(w http.ResponseWriter, r *http.Request) {
				seen = r.Header.Clone()
				w.Header().Set("Connection", "X-Origin-Hop")
				w.Header().Set("X-Origin-Hop", "1")
				w.Header().Set("Keep-Alive", "timeout=5")
				w.Header().Set("X-End-To-End", "kept")
				io.WriteString(w, "ok")
			})
			req, _ := http.NewRequest("GET", "http://hop.test:"+port+"/", nil)
			req.Header["User-Agent"] = []string{""} // the Go client sends none
			for k, v := range map[string]string{
				"Connection":       "X-Client-Hop, keep-alive",
				"X-Client-Hop":     "secret",
				"Keep-Alive":       "300",
				"Proxy-Connection": "keep-alive",
				"Te":               "trailers",
				"Upgrade":          "h2c",
				"X-End-To-End":     "kept",
				"Via":              "1.1 client-side",
				"X-Forwarded-For":  "10.9.9.9",
				"X-Real-Ip":        "10.9.9.9",
				"Forwarded":        "for=10.9.9.9",
				"From":             "me@example.org",
				"Proxy-Foo":        "bar",
			} {
				req.Header.Set(k, v)
			}
			resp, err := f.client(t, nil).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			for _, k := range []string{"X-Client-Hop", "Keep-Alive", "Proxy-Connection", "Te", "Upgrade", "Proxy-Authorization"} {
				if v, ok := seen[k]; ok {
					t.Errorf("origin saw hop-by-hop %s: %q", k, v)
				}
			}
			if seen.Get("Connection") != "" {
				t.Errorf("origin saw Connection: %q", seen.Get("Connection"))
			}
			if seen.Get("X-End-To-End") != "kept" {
				t.Error("end-to-end header lost")
			}
			ident := []string{"Via", "X-Forwarded-For", "X-Real-Ip", "Forwarded", "From", "Proxy-Foo"}
			for _, k := range ident {
				_, ok := seen[k]
				if anon && ok {
					t.Errorf("anonymized request kept %s", k)
				}
			}
			if !anon {
				// Passed on as sent, with nothing added by Sluice.
				if seen.Get("Via") != "1.1 client-side" || seen.Get("X-Forwarded-For") != "10.9.9.9" || len(seen["Via"]) != 1 {
					t.Errorf("Via %q, X-Forwarded-For %q", seen["Via"], seen["X-Forwarded-For"])
				}
			}
			if _, ok := seen["User-Agent"]; ok && !anon {
				t.Errorf("the proxy added a User-Agent: %q", seen.Get("User-Agent"))
			}
			if resp.Header.Get("X-Origin-Hop") != "" || resp.Header.Get("Keep-Alive") != "" {
				t.Errorf("client saw the origin's hop-by-hop headers: %v", resp.Header)
			}
			if resp.Header.Get("X-End-To-End") != "kept" {
				t.Error("end-to-end response header lost")
			}
		})
	}
}

func TestAcceptEncodingPassedThrough(t *testing.T) {
	f := newFixture(t, nil)
	plain := strings.Repeat("compress me ", 1000)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(plain))
	zw.Close()
	_, port := httpOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Got-Accept-Encoding", r.Header.Get("Accept-Encoding"))
		if strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
			w.Header().Set("Content-Encoding", "gzip")
			w.Write(gz.Bytes())
			return
		}
		io.WriteString(w, plain)
	})
	c := f.client(t, nil) // DisableCompression: the client sees raw bytes
	for _, ae := range []string{"gzip", ""} {
		req, _ := http.NewRequest("GET", "http://gz.test:"+port+"/", nil)
		if ae != "" {
			req.Header.Set("Accept-Encoding", ae)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if got := resp.Header.Get("X-Got-Accept-Encoding"); got != ae {
			t.Errorf("origin got Accept-Encoding %q, want %q", got, ae)
		}
		want := plain
		if ae == "gzip" {
			want = gz.String()
			if resp.Header.Get("Content-Encoding") != "gzip" {
				t.Error("Content-Encoding lost")
			}
		}
		if string(body) != want {
			t.Errorf("Accept-Encoding %q: body of %d bytes, want %d", ae, len(body), len(want))
		}
	}
}

// TestChunkedStreams: a chunked upload reaches the origin chunked, and a
// response of unknown length reaches the client piece by piece: the
// origin sends its second part only after the client has read the first.
func TestChunkedStreams(t *testing.T) {
	f := newFixture(t, nil)
	firstRead := make(chan struct{})
	_, port := httpOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		if len(r.TransferEncoding) == 0 || r.TransferEncoding[0] != "chunked" {
			http.Error(w, "want chunked", 400)
			return
		}
		b, _ := io.ReadAll(r.Body)
		w.Write(b)
		w.(http.Flusher).Flush()
		select {
		case <-firstRead:
		case <-time.After(10 * time.Second):
			return
		}
		w.Write(b)
	})
	pr, pw := io.Pipe()
	go func() { io.WriteString(pw, "abc"); pw.Close() }()
	req, _ := http.NewRequest("POST", "http://chunk.test:"+port+"/", pr)
	resp, err := f.client(t, nil).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	first := make([]byte, 3)
	if _, err := io.ReadFull(resp.Body, first); err != nil || string(first) != "abc" {
		t.Fatalf("first part %q, %v", first, err)
	}
	close(firstRead)
	rest, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(rest) != "abc" || len(resp.TransferEncoding) == 0 {
		t.Errorf("status %d, rest %q, transfer-encoding %v", resp.StatusCode, rest, resp.TransferEncoding)
	}
}

func TestWebSocketUpgrade(t *testing.T) {
	f := newFixture(t, nil)
	var seen http.Header
	o := newOrigin(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		r, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		seen = r.Header
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
			"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\nserver-first|")
		// Echo the rest, including what the client sent with its handshake.
		io.Copy(c, br)
		c.(*net.TCPConn).CloseWrite()
	})
	c := f.raw(t)
	fmt.Fprintf(c, "GET http://ws.test:%s/chat HTTP/1.1\r\nHost: ws.test:%s\r\nConnection: keep-alive, Upgrade\r\n"+
		"Upgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"+
		"Proxy-Connection: keep-alive\r\n\r\nframe-1|", o.port(), o.port())
	br := bufio.NewReader(c)
	resp := readResponse(t, br, "GET")
	if resp.StatusCode != 101 || resp.Header.Get("Sec-WebSocket-Accept") == "" || !strings.EqualFold(resp.Header.Get("Upgrade"), "websocket") {
		t.Fatalf("response %d %v", resp.StatusCode, resp.Header)
	}
	io.WriteString(c, "frame-2")
	c.CloseWrite()
	got, err := io.ReadAll(br)
	if err != nil || string(got) != "server-first|frame-1|frame-2" {
		t.Errorf("got %q, %v", got, err)
	}
	if seen.Get("Upgrade") != "websocket" || seen.Get("Connection") != "Upgrade" || seen.Get("Sec-WebSocket-Key") == "" || seen.Get("Proxy-Connection") != "" {
		t.Errorf("origin saw %v", seen)
	}
}

func TestAuth(t *testing.T) {
	f := newFixture(t, func(s *Server) { s.Auth = staticAuth{"alice": "s3cret-pw"} })
	_, port := httpOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Proxy-Authorization") != "" {
			http.Error(w, "leaked credentials", 500)
			return
		}
		io.WriteString(w, "welcome")
	})
	o := newOrigin(t, echo)
	target := "http://auth.test:" + port + "/"
	t.Run("plain without credentials", func(t *testing.T) {
		resp, err := f.client(t, nil).Get(target)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 407 || resp.Header.Get("Proxy-Authenticate") != `Basic realm="sluice"` || len(resp.Header["Proxy-Authenticate"]) != 1 {
			t.Errorf("status %d, Proxy-Authenticate %q", resp.StatusCode, resp.Header["Proxy-Authenticate"])
		}
	})
	for _, tc := range []struct {
		name string
		user *url.Userinfo
		code int
	}{
		{"wrong password", url.UserPassword("alice", "nope"), 407},
		{"unknown user", url.UserPassword("mallory", "s3cret-pw"), 407},
		{"good", url.UserPassword("alice", "s3cret-pw"), 200},
	} {
		t.Run("plain "+tc.name, func(t *testing.T) {
			resp, err := f.client(t, tc.user).Get(target)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.code {
				t.Errorf("status %d (%q), want %d", resp.StatusCode, body, tc.code)
			}
			if tc.code == 200 && f.policy.last().User != "alice" {
				t.Errorf("filter.Request.User = %q", f.policy.last().User)
			}
		})
	}
	t.Run("connect without credentials", func(t *testing.T) {
		c := f.raw(t)
		fmt.Fprintf(c, "CONNECT echo.test:%s HTTP/1.1\r\nHost: echo.test\r\n\r\n", o.port())
		resp := readResponse(t, bufio.NewReader(c), "CONNECT")
		if resp.StatusCode != 407 || resp.Header.Get("Proxy-Authenticate") != `Basic realm="sluice"` {
			t.Errorf("status %d, header %q", resp.StatusCode, resp.Header.Get("Proxy-Authenticate"))
		}
	})
	t.Run("curl plain", func(t *testing.T) {
		out, err := curl(t, "-x", "http://"+f.addr, "--proxy-user", "alice:s3cret-pw", target)
		if err != nil || out != "welcome" {
			t.Errorf("curl: %q, %v", out, err)
		}
		out, _ = curl(t, "-o", "/dev/null", "-w", "%{http_code}", "-x", "http://"+f.addr, target)
		if out != "407" {
			t.Errorf("curl without credentials: %q, want 407", out)
		}
	})
	t.Run("curl connect", func(t *testing.T) {
		tlsOrigin := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "tls ok") }))
		defer tlsOrigin.Close()
		_, tport, _ := net.SplitHostPort(tlsOrigin.Listener.Addr().String())
		out, err := curl(t, "-k", "-p", "-x", "http://"+f.addr, "--proxy-user", "alice:s3cret-pw", "https://tls.test:"+tport+"/")
		if err != nil || out != "tls ok" {
			t.Errorf("curl: %q, %v", out, err)
		}
	})
	logs := f.log.String()
	if strings.Contains(logs, "s3cret-pw") || strings.Contains(logs, "czNjcmV0") || strings.Contains(logs, "Basic ") {
		t.Errorf("the log contains credentials:\n%s", logs)
	}
	if !strings.Contains(logs, `"user":"alice"`) || !strings.Contains(logs, `"reason":"bad proxy credentials"`) {
		t.Errorf("the log lacks the user or the failed attempt:\n%s", logs)
	}
}

type staticAuth map[string]string

func (a staticAuth) Authenticate(_ netip.Addr, user, password string) ([]string, bool) {
	p, ok := a[user]
	return nil, ok && p == password
}

// TestCurl drives the proxy with the real curl: plain -x and CONNECT (-p)
// to an HTTPS origin, allowed and blocked.
func TestCurl(t *testing.T) {
	f := newFixture(t, nil)
	_, port := httpOrigin(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "plain ok") })
	tlsOrigin := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "tls ok") }))
	t.Cleanup(tlsOrigin.Close)
	_, tport, _ := net.SplitHostPort(tlsOrigin.Listener.Addr().String())
	proxyURL := "http://" + f.addr
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"plain allowed", []string{"-x", proxyURL, "http://curl.test:" + port + "/"}, "plain ok"},
		{"plain blocked", []string{"-o", "/dev/null", "-w", "%{http_code}", "-x", proxyURL, "http://blocked.test:" + port + "/"}, "403"},
		{"connect allowed", []string{"-k", "-p", "-x", proxyURL, "https://curl.test:" + tport + "/"}, "tls ok"},
		{"https through plain proxy", []string{"-k", "-x", proxyURL, "https://curl.test:" + tport + "/"}, "tls ok"},
		{"connect blocked", []string{"-k", "-p", "-o", "/dev/null", "-w", "%{http_connect}", "-x", proxyURL, "https://blocked.test:" + tport + "/"}, "403"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := curl(t, tc.args...)
			if out != tc.want {
				t.Errorf("curl %v: %q (%v), want %q", tc.args, out, err, tc.want)
			}
		})
	}
}

// TestEnvironmentProxyIgnored: TestMain points every *_PROXY variable at a
// counting listener; requests to non-loopback-looking names (which
// http.ProxyFromEnvironment would proxy) must not reach it.
func TestEnvironmentProxyIgnored(t *testing.T) {
	f := newFixture(t, nil)
	_, port := httpOrigin(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	o := newOrigin(t, echo)
	before := envProxyHits.Load()
	resp, err := f.client(t, nil).Get("http://env.test:" + port + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("plain: status %d", resp.StatusCode)
	}
	c := f.raw(t)
	fmt.Fprintf(c, "CONNECT env.test:%s HTTP/1.1\r\nHost: env.test\r\n\r\n", o.port())
	if resp := readResponse(t, bufio.NewReader(c), "CONNECT"); resp.StatusCode != 200 {
		t.Errorf("CONNECT: status %d", resp.StatusCode)
	}
	if n := envProxyHits.Load() - before; n != 0 {
		t.Errorf("the environment's proxy was contacted %d times", n)
	}
}

func TestAccessLog(t *testing.T) {
	f := newFixture(t, nil)
	_, port := httpOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "12345")
	})
	c := f.client(t, nil)
	resp, err := c.Post("http://log.test:"+port+"/", "text/plain", strings.NewReader("abc"))
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	resp, err = c.Get("http://blocked.test:" + port + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(f.log.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("bad log line %q: %v", l, err)
		}
		lines = append(lines, m)
	}
	if len(lines) != 2 {
		t.Fatalf("%d log lines, want 2:\n%s", len(lines), f.log.String())
	}
	a, b := lines[0], lines[1]
	for k, want := range map[string]any{"msg": "access", "method": "POST", "target": "log.test:" + port, "verdict": "allow",
		"status": 200.0, "up": 3.0, "down": 5.0, "route": "direct", "proto": "http", "rule": "default"} {
		if a[k] != want {
			t.Errorf("allowed line: %s = %v, want %v", k, a[k], want)
		}
	}
	for k, want := range map[string]any{"verdict": "block", "status": 403.0, "rule": "rule 3 (sluice.yaml:12)", "category": "social", "reason": "matched rule"} {
		if b[k] != want {
			t.Errorf("blocked line: %s = %v, want %v", k, b[k], want)
		}
	}
	if _, ok := a["client"]; !ok {
		t.Error("no client in the log line")
	}
	if ida, idb := a["request_id"], b["request_id"]; ida == nil || idb == nil || ida == "" || ida == idb {
		t.Errorf("request ids %v and %v: want two different ids", ida, idb)
	}
	if _, ok := a["dur"]; !ok {
		t.Error("no duration in the log line")
	}
}

type panicPolicy struct{}

func (panicPolicy) Decide(filter.Request) filter.Decision { panic("boom") }

func TestPanicDoesNotReachClient(t *testing.T) {
	f := newFixture(t, func(s *Server) { s.Policy = panicPolicy{} })
	c := f.client(t, nil)
	for range 2 { // the server survives
		resp, err := c.Get("http://panic.test/")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 500 || strings.Contains(string(body), "boom") {
			t.Errorf("status %d, body %q", resp.StatusCode, body)
		}
	}
	if !strings.Contains(f.log.String(), "panic serving request") {
		t.Error("the panic was not logged")
	}
}

// TestBaseContextEndsTunnels: cancelling the http.Server's BaseContext,
// as proxy/server does when its shutdown grace period ends, ends a tunnel.
func TestBaseContextEndsTunnels(t *testing.T) {
	srv := &Server{Policy: &testPolicy{}, Dial: (&testDial{}).Dial}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, stop := serve(srv, ln)
	o := newOrigin(t, echo)
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "CONNECT echo.test:%s HTTP/1.1\r\nHost: echo.test\r\n\r\n", o.port())
	br := bufio.NewReader(c)
	if resp := readResponse(t, br, "CONNECT"); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if err := stop(); err != nil {
		t.Errorf("Serve = %v, want nil", err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := br.ReadByte(); err == nil || isTimeoutErr(err) {
		t.Errorf("tunnel after the base context ended: %v, want closed", err)
	}
}

func isTimeoutErr(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// TestLargeBodiesStream sends a large download and upload through the
// proxy and checks that the heap stays small: bodies are streamed.
func TestLargeBodiesStream(t *testing.T) {
	size := int64(256 << 20)
	if raceEnabled || testing.Short() {
		size = 32 << 20
	}
	f := newFixture(t, nil)
	_, port := httpOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Method == "POST" {
			n, err := io.Copy(io.Discard, r.Body)
			fmt.Fprintf(w, "%d %v", n, err)
			return
		}
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		io.CopyN(w, zeros{}, size)
	})
	c := f.client(t, nil)
	peak := watchHeap(t)
	base := peak()

	resp, err := c.Get("http://big.test:" + port + "/")
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if n != size || err != nil {
		t.Fatalf("download: %d bytes, %v", n, err)
	}
	for _, chunked := range []bool{false, true} {
		req, _ := http.NewRequest("POST", "http://big.test:"+port+"/", io.LimitReader(zeros{}, size))
		if !chunked {
			req.ContentLength = size
		}
		resp, err = c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != strconv.FormatInt(size, 10)+" <nil>" {
			t.Fatalf("upload (chunked %v): origin says %q", chunked, body)
		}
	}
	grew := peak() - base
	t.Logf("moved 3 × %d MiB; heap peak grew by %.1f MiB", size>>20, float64(grew)/(1<<20))
	if grew > 32<<20 {
		t.Errorf("heap grew by %d MiB while streaming: bodies are buffered", grew>>20)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// withConnTrace records the local address of each conn the client gets.
func withConnTrace(ctx context.Context, m *sync.Map) context.Context {
	return httptraceWithGotConn(ctx, func(c net.Conn) { m.Store(c.LocalAddr().String(), true) })
}

// TestLargeConnectTunnel pushes data through a CONNECT tunnel both ways.
func TestLargeConnectTunnel(t *testing.T) {
	f := newFixture(t, nil)
	o := newOrigin(t, echo)
	c := f.raw(t)
	fmt.Fprintf(c, "CONNECT echo.test:%s HTTP/1.1\r\nHost: echo.test\r\n\r\n", o.port())
	br := bufio.NewReader(c)
	if resp := readResponse(t, br, "CONNECT"); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	data := make([]byte, 8<<20)
	rand.Read(data)
	go func() { c.Write(data); c.CloseWrite() }()
	got, err := io.ReadAll(br)
	if err != nil || !bytes.Equal(got, data) {
		t.Errorf("echoed %d of %d bytes, %v", len(got), len(data), err)
	}
}

// peekListener wraps accepted conns the way proxy/server's mixed port does:
// it reads the first byte and replays it through relay.WithPrefix.
type peekListener struct{ net.Listener }

func (l peekListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	b := make([]byte, 1)
	if _, err := io.ReadFull(c, b); err != nil {
		c.Close()
		return nil, err
	}
	return relay.WithPrefix(c, b), nil
}

// TestConnectBehindPeekingListener: early data and the tunnel survive a
// listener that already consumed the first byte.
func TestConnectBehindPeekingListener(t *testing.T) {
	srv := &Server{Policy: &testPolicy{}, Dial: (&testDial{}).Dial}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, stop := serve(srv, peekListener{ln})
	t.Cleanup(func() { stop() })
	o := newOrigin(t, echo)
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "CONNECT echo.test:%s HTTP/1.1\r\nHost: echo.test\r\n\r\nearly", o.port())
	br := bufio.NewReader(c)
	if resp := readResponse(t, br, "CONNECT"); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	io.WriteString(c, "+late")
	c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(br)
	if err != nil || string(got) != "early+late" {
		t.Errorf("got %q, %v", got, err)
	}
}

func TestConnectIdleTimeout(t *testing.T) {
	f := newFixture(t, func(s *Server) { s.IdleTimeout = 100 * time.Millisecond })
	o := newOrigin(t, echo)
	c := f.raw(t)
	fmt.Fprintf(c, "CONNECT echo.test:%s HTTP/1.1\r\nHost: echo.test\r\n\r\n", o.port())
	br := bufio.NewReader(c)
	if resp := readResponse(t, br, "CONNECT"); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if _, err := br.ReadByte(); err == nil {
		t.Error("read a byte from a silent tunnel")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Error("the idle tunnel was not closed by the proxy")
	}
}
