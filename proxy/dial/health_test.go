package dial

import (
	"context"
	"net/url"
	"slices"
	"sync"
	"testing"
	"time"
)

// TestOnFailoverAndUp: OnFailover is called once per dial of a failover
// route that did not go to its first member (it failed, then it was
// skipped as down), never for a dial that the first member served nor for
// a chain route; Up follows the back-off.
func TestOnFailoverAndUp(t *testing.T) {
	origin := startOrigin(t, banner)
	var mu sync.Mutex
	var calls []string
	r, err := NewRouter(Config{
		Routes: map[string]RouteSpec{
			"dead":  {Chain: []*url.URL{mustURL(t, "socks5://"+closedAddr(t))}},
			"pool":  {Failover: []string{"dead", "direct"}},
			"first": {Failover: []string{"direct", "dead"}},
		},
		Backoff:    time.Minute,
		OnFailover: func(route string) { mu.Lock(); calls = append(calls, route); mu.Unlock() },
	})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	r.now = func() time.Time { return now }
	for _, route := range []string{"dead", "pool", "first", "direct", ""} {
		if !r.Up(route) {
			t.Fatalf("%q down before any dial", route)
		}
	}
	if r.Up("nope") {
		t.Fatal("an unknown route is up")
	}
	dial := func(route string) error {
		c, err := r.Dial(context.Background(), route, "tcp", origin.addr())
		if err == nil {
			exchange(t, c, banner, true)
			c.Close()
		}
		return err
	}
	if err := dial("pool"); err != nil { // dead fails, direct serves
		t.Fatal(err)
	}
	if err := dial("pool"); err != nil { // dead is skipped
		t.Fatal(err)
	}
	if err := dial("first"); err != nil { // direct, the first member, serves
		t.Fatal(err)
	}
	if err := dial("dead"); err == nil { // a chain: no failover
		t.Fatal("dial through a dead upstream succeeded")
	}
	mu.Lock()
	got := slices.Clone(calls)
	mu.Unlock()
	if !slices.Equal(got, []string{"pool", "pool"}) {
		t.Fatalf("OnFailover calls %v, want [pool pool]", got)
	}
	if r.Up("dead") || !r.Up("pool") || !r.Up("first") {
		t.Fatalf("after the failure: dead %v pool %v first %v, want false true true", r.Up("dead"), r.Up("pool"), r.Up("first"))
	}
	now = now.Add(2 * time.Minute)
	if !r.Up("dead") {
		t.Fatal("dead still down after the back-off")
	}
}
