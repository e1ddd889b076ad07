package dial

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestNewRouterErrors(t *testing.T) {
	u := func(s string) []*url.URL { return []*url.URL{mustURL(t, s)} }
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"unknown default", Config{Default: "office"}, `default route "office"`},
		{"unknown failover", Config{Routes: map[string]RouteSpec{"pool": {Failover: []string{"nope"}}}}, `unknown route "nope"`},
		{"cycle", Config{Routes: map[string]RouteSpec{
			"a": {Failover: []string{"b"}}, "b": {Failover: []string{"direct", "a"}},
		}}, "failover cycle"},
		{"self cycle", Config{Routes: map[string]RouteSpec{"a": {Failover: []string{"a"}}}}, "failover cycle"},
		{"bad scheme", Config{Routes: map[string]RouteSpec{"x": {Chain: u("ftp://h:21")}}}, "unsupported upstream scheme"},
		{"no host", Config{Routes: map[string]RouteSpec{"x": {Chain: u("http://:3128")}}}, "no host"},
		{"empty", Config{Routes: map[string]RouteSpec{"x": {}}}, "no upstream"},
		{"both", Config{Routes: map[string]RouteSpec{"x": {Chain: u("http://h:1"), Failover: []string{"direct"}}}}, "both"},
		{"reserved", Config{Routes: map[string]RouteSpec{"direct": {Chain: u("http://h:1")}}}, "reserved"},
		{"bad ca", Config{Routes: map[string]RouteSpec{"x": {Chain: u("https://h:1"), TLSCA: []byte("junk")}}}, "no PEM"},
		{"nil hop", Config{Routes: map[string]RouteSpec{"x": {Chain: []*url.URL{nil}}}}, "no url"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewRouter(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one containing %q", err, tt.want)
			}
			if !errors.Is(err, ErrRouteConfig) {
				t.Fatalf("err = %v, not ErrRouteConfig", err)
			}
		})
	}
}

func TestDescribeAndResolves(t *testing.T) {
	r, err := NewRouter(Config{
		Routes: map[string]RouteSpec{
			"office": {Chain: []*url.URL{mustURL(t, "http://user:secret@parent.corp:3128")}},
			"vpn":    {Chain: []*url.URL{mustURL(t, "https://edge.example"), mustURL(t, "socks5://u:p@exit.example:1080")}},
			"tor":    {Chain: []*url.URL{mustURL(t, "socks5h://127.0.0.1:9050")}},
			"s4":     {Chain: []*url.URL{mustURL(t, "socks4a://bob@h")}},
			"pool":   {Failover: []string{"office", "tor"}},
			"local":  {Failover: []string{"direct"}},
		},
		Default: "office",
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		route    string
		describe string
		resolves bool
	}{
		{"", "office: http://user:xxxxx@parent.corp:3128", false},
		{"direct", "direct", true},
		{"office", "office: http://user:xxxxx@parent.corp:3128", false},
		{"vpn", "vpn: https://edge.example:443 -> socks5://u:xxxxx@exit.example:1080", false},
		{"tor", "tor: socks5h://127.0.0.1:9050", false},
		{"s4", "s4: socks4a://bob@h:1080", false},
		{"pool", "pool: failover office, tor", false},
		{"local", "local: failover direct", true},
		{"nope", "nope: unknown route", false},
	}
	for _, tt := range tests {
		t.Run(tt.route, func(t *testing.T) {
			if got := r.Describe(tt.route); got != tt.describe {
				t.Errorf("Describe = %q, want %q", got, tt.describe)
			}
			if strings.Contains(r.Describe(tt.route), "secret") {
				t.Error("Describe leaks a password")
			}
			if got := r.Resolves(tt.route); got != tt.resolves {
				t.Errorf("Resolves = %v, want %v", got, tt.resolves)
			}
		})
	}
	if _, err := r.Dial(context.Background(), "nope", "tcp", "127.0.0.1:9"); !errors.Is(err, ErrUnknownRoute) {
		t.Fatalf("unknown route: %v", err)
	}
}

// TestFailover: the first member's upstream is down (a closed port), so
// the dial goes through the second and the first is marked down for the
// back-off; while it is down it is skipped; with every member down, all
// are tried anyway.
func TestFailover(t *testing.T) {
	origin := startOrigin(t, banner)
	deadURL := mustURL(t, "http://"+closedAddr(t))
	r, err := NewRouter(Config{
		Routes: map[string]RouteSpec{
			"dead":  {Chain: []*url.URL{deadURL}},
			"dead2": {Chain: []*url.URL{mustURL(t, "socks5://"+closedAddr(t))}},
			"squid": {Chain: []*url.URL{squidURL(t)}},
			"pool":  {Failover: []string{"dead", "squid"}},
			"gone":  {Failover: []string{"dead", "dead2"}},
		},
		Default: "pool",
		Backoff: time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	r.now = func() time.Time { return now }

	c, err := r.Dial(context.Background(), "", "tcp", origin.addr())
	if err != nil {
		t.Fatal(err)
	}
	exchange(t, c, banner, false) // squid: no half-close
	c.Close()
	if !r.isDown(r.routes["dead"]) {
		t.Fatal("dead upstream not marked down")
	}
	if r.isDown(r.routes["squid"]) {
		t.Fatal("squid marked down")
	}

	// A target failure through a healthy member does not fail over and
	// does not mark the member down.
	_, err = r.Dial(context.Background(), "pool", "tcp", closedAddr(t))
	if Classify(err) != KindUpstream || r.isDown(r.routes["squid"]) {
		t.Fatalf("target failure: %v, squid down %v", err, r.isDown(r.routes["squid"]))
	}

	// All down: both tried, the last error returned, naming the member.
	_, err = r.Dial(context.Background(), "gone", "tcp", origin.addr())
	var de *Error
	if !errors.As(err, &de) || de.Kind != KindRefused || de.Upstream != "gone/dead2" {
		t.Fatalf("all down: %v", err)
	}
	if !r.isDown(r.routes["gone"]) {
		t.Fatal("failover route with every member down is not down")
	}

	// After the back-off the hop is up again.
	now = now.Add(2 * time.Minute)
	if r.isDown(r.routes["dead"]) {
		t.Fatal("hop still down after the back-off")
	}
}

// TestFailoverRouteNote: a dial on a failover route notes the member that
// carried it, through nested failover lists; a chain and direct are not
// noted, and a failed dial notes nothing.
func TestFailoverRouteNote(t *testing.T) {
	origin := startOrigin(t, banner)
	r, err := NewRouter(Config{
		Routes: map[string]RouteSpec{
			"dead":  {Chain: []*url.URL{mustURL(t, "http://"+closedAddr(t))}},
			"dead2": {Chain: []*url.URL{mustURL(t, "socks5://"+closedAddr(t))}},
			"inner": {Failover: []string{"dead2", "direct"}},
			"pool":  {Failover: []string{"dead", "inner"}},
			"gone":  {Failover: []string{"dead", "dead2"}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ route, want string }{
		{"pool", "pool/inner/direct"},
		{"inner", "inner/direct"},
		{"direct", ""},
		{"dead", ""},
		{"gone", ""},
	} {
		var noted []string
		ctx := WithRouteNote(context.Background(), func(r string) { noted = append(noted, r) })
		c, err := r.Dial(ctx, tt.route, "tcp", origin.addr())
		if err == nil {
			c.Close()
		}
		if got := strings.Join(noted, ","); got != tt.want {
			t.Errorf("route %s: noted %q, want %q (err %v)", tt.route, got, tt.want, err)
		}
	}
}
