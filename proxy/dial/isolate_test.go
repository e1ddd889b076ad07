package dial

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestIsolationUser(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	a := Identity{Client: netip.MustParseAddr("10.0.0.1")}
	b := Identity{Client: netip.MustParseAddr("10.0.0.2")}
	au := Identity{Client: a.Client, User: "alice"}
	bu := Identity{Client: b.Client, User: "alice"}
	cases := []struct {
		name   string
		x, y   string
		same   bool
		reason string
	}{
		{"client", IsolationUser(key, IsolateClient, a, "x.test:80"), IsolationUser(key, IsolateClient, b, "x.test:80"), false, "two clients"},
		{"client", IsolationUser(key, IsolateClient, a, "x.test:80"), IsolationUser(key, IsolateClient, a, "y.test:443"), true, "one client, two sites"},
		{"user", IsolationUser(key, IsolateUser, au, "x.test:80"), IsolationUser(key, IsolateUser, bu, "x.test:80"), true, "one user on two addresses"},
		{"user", IsolationUser(key, IsolateUser, a, "x.test:80"), IsolationUser(key, IsolateClient, a, "x.test:80"), true, "no user falls back to the client"},
		{"user", IsolationUser(key, IsolateUser, au, "x.test:80"), IsolationUser(key, IsolateUser, a, "x.test:80"), false, "user vs address"},
		{"destination", IsolationUser(key, IsolateDestination, a, "a.bbc.co.uk:443"), IsolationUser(key, IsolateDestination, a, "news.BBC.co.uk.:80"), true, "one registrable domain"},
		{"destination", IsolationUser(key, IsolateDestination, a, "a.bbc.co.uk:443"), IsolationUser(key, IsolateDestination, a, "b.co.uk:443"), false, "two sites"},
		{"destination", IsolationUser(key, IsolateDestination, a, "a.bbc.co.uk:443"), IsolationUser(key, IsolateDestination, b, "a.bbc.co.uk:443"), false, "two clients, one site"},
		{"key", IsolationUser(key, IsolateClient, a, "x"), IsolationUser([]byte("another key of 32 bytes........."), IsolateClient, a, "x"), false, "two keys"},
	}
	for _, c := range cases {
		if (c.x == c.y) != c.same || len(c.x) != 32 || strings.Contains(c.x, "10.0.0") || strings.Contains(c.x, "alice") {
			t.Errorf("%s, %s: %q vs %q, want same=%v", c.name, c.reason, c.x, c.y, c.same)
		}
	}
	if IsolationUser(key, IsolateNone, a, "x") != "" {
		t.Error("IsolateNone gives a name")
	}
	if got := Registrable("[::1]:80"); got != "::1" {
		t.Errorf("Registrable(ip) = %q", got)
	}
}

func TestLoadIsolationKey(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "cache", "isolation.key")
	k1, err := LoadIsolationKey(path)
	if err != nil || len(k1) != IsolationKeySize {
		t.Fatalf("create: %v %d", err, len(k1))
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, %v", fi.Mode(), err)
	}
	k2, err := LoadIsolationKey(path)
	if err != nil || string(k1) != string(k2) {
		t.Fatalf("reload gave another key (%v)", err)
	}
	os.Chmod(path, 0o644)
	if _, err := LoadIsolationKey(path); !errors.Is(err, ErrIsolationKey) {
		t.Errorf("a key readable by others: %v", err)
	}
	os.Chmod(path, 0o600)
	os.WriteFile(path, []byte("short"), 0o600)
	if _, err := LoadIsolationKey(path); !errors.Is(err, ErrIsolationKey) {
		t.Errorf("a short key: %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "short" {
		t.Error("a bad key was replaced")
	}
}

func TestIsolateRouteConfig(t *testing.T) {
	key := make([]byte, 32)
	bad := []struct {
		spec RouteSpec
		key  []byte
		want string
	}{
		{RouteSpec{Chain: mustURLs(t, "socks5h://u:p@127.0.0.1:9050"), Isolate: IsolateClient}, key, "has a user"},
		{RouteSpec{Chain: mustURLs(t, "socks4a://127.0.0.1:9050"), Isolate: IsolateClient}, key, "needs socks5"},
		{RouteSpec{Chain: mustURLs(t, "socks5h://127.0.0.1:9050"), Isolate: IsolateClient}, nil, "isolation key"},
		{RouteSpec{Failover: []string{"direct"}, Isolate: IsolateUser}, key, "failover"},
	}
	for _, c := range bad {
		_, err := NewRouter(Config{Routes: map[string]RouteSpec{"tor": c.spec}, IsolationKey: c.key})
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), ":p@") {
			t.Errorf("%+v: %v, want %q", c.spec, err, c.want)
		}
	}
	// Only the last hop isolates: a first hop with credentials is fine.
	spec := RouteSpec{Chain: mustURLs(t, "socks5://u:p@127.0.0.1:1080", "socks5h://127.0.0.1:9050"), Isolate: IsolateClient}
	r, err := NewRouter(Config{Routes: map[string]RouteSpec{"tor": spec, "pool": {Failover: []string{"tor"}}}, IsolationKey: key})
	if err != nil {
		t.Fatal(err)
	}
	if d := r.Describe("tor"); !strings.HasSuffix(d, "(isolate client)") {
		t.Errorf("Describe: %q", d)
	}
	for _, name := range []string{"tor", "pool"} {
		if _, ok := r.Transport(name).(isoTransport); !ok {
			t.Errorf("route %s: an isolating route's Transport is shared by every identity", name)
		}
	}
}

func mustURLs(t *testing.T, ss ...string) (out []*url.URL) {
	for _, s := range ss {
		out = append(out, mustURL(t, s))
	}
	return out
}

// TestIsolateHTTPHop: an http last hop gets one Proxy-Authorization per
// identity, with the fixed password, read from the dial's context.
func TestIsolateHTTPHop(t *testing.T) {
	ln := listen(t)
	auths := make(chan string, 8)
	serve(t, ln, func(c net.Conn) {
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(c)
		var auth string
		for {
			h, err := br.ReadString('\n')
			if err != nil || h == "\r\n" {
				break
			}
			if k, v, ok := strings.Cut(h, ":"); ok && strings.EqualFold(k, "Proxy-Authorization") {
				auth = strings.TrimSpace(v)
			}
		}
		auths <- auth
		io.WriteString(c, "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
	})
	key := make([]byte, 32)
	r, err := NewRouter(Config{Routes: map[string]RouteSpec{
		"tor": {Chain: mustURLs(t, "http://"+ln.Addr().String()), Isolate: IsolateClient},
	}, IsolationKey: key})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, client := range []string{"10.0.0.1", "10.0.0.2", "10.0.0.1"} {
		id := Identity{Client: netip.MustParseAddr(client)}
		ctx := WithIdentity(context.Background(), id)
		if c, err := r.Dial(ctx, "tor", "tcp", "x.test:80"); err == nil {
			c.Close()
			t.Fatal("the 403 hop let the dial through")
		}
		a := <-auths
		raw, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(a, "Basic "))
		want := IsolationUser(key, IsolateClient, id, "x.test:80") + ":" + IsolationPassword
		if err != nil || string(raw) != want {
			t.Fatalf("client %s sent %q, want Basic %q", client, a, want)
		}
		if prev, ok := got[client]; ok && prev != a {
			t.Errorf("client %s: two identities", client)
		}
		got[client] = a
	}
	if got["10.0.0.1"] == got["10.0.0.2"] {
		t.Error("two clients, one identity")
	}
	if mode, name := r.Isolation("tor", Identity{Client: netip.MustParseAddr("10.0.0.1")}, "x.test:80"); mode != IsolateClient || "Basic "+base64.StdEncoding.EncodeToString([]byte(name+":"+IsolationPassword)) != got["10.0.0.1"] {
		t.Errorf("Isolation() = %v %q, not what the hop sent", mode, name)
	}
}
