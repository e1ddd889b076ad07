package auth

import (
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// limitedFile loads alice and bob with a burst of 2 failures and one more
// attempt per minute, on a fake clock.
func limitedFile(t *testing.T) (*File, *fakeClock) {
	t.Helper()
	f, err := Load(usersFile(t))
	if err != nil {
		t.Fatal(err)
	}
	clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	f.Now, f.FailureBurst, f.FailureEvery = clock.Now, 2, time.Minute
	return f, clock
}

// exhaust makes user fail from client until the pair is limited.
func exhaust(t *testing.T, f *File, client netip.Addr, user string) {
	t.Helper()
	for range 2 {
		if f.Authenticate(client, user, "wrong") {
			t.Fatal("wrong password accepted")
		}
	}
	before := f.Stats().Limited
	f.Authenticate(client, user, "wrong")
	if f.Stats().Limited != before+1 {
		t.Fatalf("%s from %s not limited after the burst", user, client)
	}
}

// TestLimitPerUserBehindNAT: bob's failures from an address (a NAT) never
// lock out alice from the same address, and bob's right password is
// accepted again once the window for his pair has passed.
func TestLimitPerUserBehindNAT(t *testing.T) {
	f, clock := limitedFile(t)
	nat := netip.MustParseAddr("198.51.100.7")
	exhaust(t, f, nat, "bob")
	if f.Authenticate(nat, "bob", "builder") {
		t.Error("limited pair accepted before the window passed")
	}
	if !f.Authenticate(nat, "alice", "wonderland") {
		t.Error("alice locked out by bob's failures behind the same address")
	}
	// An IPv4-mapped IPv6 address is the same client.
	if f.Authenticate(netip.MustParseAddr("::ffff:198.51.100.7"), "bob", "builder") {
		t.Error("the IPv4-mapped form of a limited client escaped the limit")
	}
	if !f.Authenticate(netip.MustParseAddr("198.51.100.8"), "bob", "builder") {
		t.Error("bob from another address was limited too")
	}
	clock.Add(59 * time.Second)
	if f.Authenticate(nat, "bob", "builder") {
		t.Error("limited pair accepted before the window passed")
	}
	clock.Add(2 * time.Second)
	if !f.Authenticate(nat, "bob", "builder") {
		t.Error("bob's right password refused after the window passed")
	}
}

// TestLimitIPv6Per64: IPv6 clients in one /64 share a pair's allowance;
// another /64 does not.
func TestLimitIPv6Per64(t *testing.T) {
	f, clock := limitedFile(t)
	exhaust(t, f, netip.MustParseAddr("2001:db8:1:2::1"), "bob")
	for _, a := range []string{"2001:db8:1:2::2", "2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::1%eth0"} {
		if f.Authenticate(netip.MustParseAddr(a), "bob", "builder") {
			t.Errorf("%s, in the limited /64, was accepted", a)
		}
	}
	if !f.Authenticate(netip.MustParseAddr("2001:db8:1:3::1"), "bob", "builder") {
		t.Error("a client in another /64 was limited")
	}
	if !f.Authenticate(netip.MustParseAddr("2001:db8:1:2::3"), "alice", "wonderland") {
		t.Error("alice in the same /64 was limited by bob's failures")
	}
	clock.Add(time.Minute)
	if !f.Authenticate(netip.MustParseAddr("2001:db8:1:2::9"), "bob", "builder") {
		t.Error("bob's right password refused after the window passed")
	}
}

// TestLimitKeepsCache: a cached verification still answers without
// bcrypt, and a limited pair is refused even with a cached password (the
// cache must not become an unlimited oracle).
func TestLimitKeepsCache(t *testing.T) {
	f, _ := limitedFile(t)
	c := netip.MustParseAddr("192.0.2.1")
	if !f.Authenticate(c, "alice", "wonderland") || !f.Authenticate(c, "alice", "wonderland") {
		t.Fatal("right password refused")
	}
	if s := f.Stats(); s.Verifications != 1 || s.CacheHits != 1 {
		t.Fatalf("cache not used: %+v", s)
	}
	exhaust(t, f, c, "alice")
	if f.Authenticate(c, "alice", "wonderland") {
		t.Error("limited pair accepted through the cache")
	}
}

// TestBcryptBounded: many concurrent attempts with distinct user names
// (each pair has its own allowance) never run more bcrypt comparisons at
// once than there are CPUs.
func TestBcryptBounded(t *testing.T) {
	f, _ := limitedFile(t)
	var running, peak atomic.Int64
	f.compare = func(entry, string) bool {
		n := running.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		time.Sleep(5 * time.Millisecond) // let the others pile up
		running.Add(-1)
		return false
	}
	const attempts = 64
	var wg sync.WaitGroup
	for i := range attempts {
		wg.Go(func() {
			f.Authenticate(netip.MustParseAddr("192.0.2.1"), "user"+string(rune('A'+i)), "x")
		})
	}
	wg.Wait()
	if got := f.Stats().Verifications; got != attempts {
		t.Fatalf("comparisons = %d, want %d", got, attempts)
	}
	if p, max := peak.Load(), int64(runtime.NumCPU()); p > max || p < 1 {
		t.Errorf("peak concurrent comparisons = %d, want 1..%d", p, max)
	}
}
