//go:build !race

package relay

import (
	"context"
	"io"
	"net"
	"testing"
)

// TestStartAllocs (not under -race, which allocates more) bounds the allocations of a short tunnel between two
// TCP sockets (Start, one byte each way, both ends closed): the splicer,
// its directions' goroutine, one syscall.RawConn per
// socket shared by both directions and one callback per direction.
func TestStartAllocs(t *testing.T) {
	const runs = 20
	type set struct{ user, client, origin, server *net.TCPConn }
	sets := make([]set, runs+1)
	for i := range sets {
		sets[i].user, sets[i].client = tcpPair(t)
		sets[i].origin, sets[i].server = tcpPair(t)
	}
	done := make(chan struct{}, 1)
	end := func(Stats, error) { done <- struct{}{} }
	// A context that can end, shared with a tunnel that stays open, as a
	// server's base context is shared by its tunnels (watch.go).
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	held := make(chan struct{}, 1)
	hu, hc := tcpPair(t)
	ho, hs := tcpPair(t)
	Start(ctx, hc, ho, 0, func(Stats, error) { held <- struct{}{} })
	defer func() { hu.Close(); hs.Close(); <-held }()
	b := make([]byte, 1)
	i := 0
	allocs := testing.AllocsPerRun(runs, func() {
		s := sets[i]
		i++
		Start(ctx, s.client, s.origin, 0, end)
		s.user.Write([]byte{'u'})
		io.ReadFull(s.server, b)
		s.server.Write([]byte{'d'})
		io.ReadFull(s.user, b)
		s.user.CloseWrite()
		s.server.CloseWrite()
		<-done
	})
	for _, s := range sets {
		s.user.Close()
		s.server.Close()
	}
	t.Logf("%.1f allocations per tunnel", allocs)
	if allocs > maxStartAllocs {
		t.Errorf("%.1f allocations per tunnel, want at most %d", allocs, maxStartAllocs)
	}
}

// maxStartAllocs bounds TestStartAllocs: 7 with go1.26 (10 with a
// context.AfterFunc per tunnel, 14 when each direction made its own
// RawConns and two callbacks).
const maxStartAllocs = 7
