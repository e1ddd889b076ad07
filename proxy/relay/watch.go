package relay

import (
	"context"
	"reflect"
	"sync"
)

// Watching contexts: every splice must end when its context ends (a
// server's shutdown). A context.AfterFunc per tunnel would cost three
// allocations and an entry in the context's map of children, added and
// removed under that context's lock for every tunnel. Tunnels share their
// context (a server's base context), so the relay keeps one AfterFunc per
// context being watched and a list of its splicers, linked through the
// splicers themselves: registering and leaving allocate nothing. A
// context's group stays when its last tunnel ends, for the next one, until
// the context ends; only when more than keepGroups contexts are watched
// (contexts of a request each) is an empty group dropped at once.

// watchGroup is the splicers of one context, and its AfterFunc.
type watchGroup struct {
	ctx   context.Context
	head  *splicer    // first of the list, linked by splicer.next and prev
	stop  func() bool // stops the AfterFunc
	fired bool        // the context ended: new splicers are cut at once
}

// keepGroups is how many contexts may be watched with no tunnel on them.
const keepGroups = 16

var watching struct {
	mu     sync.Mutex
	groups map[context.Context]*watchGroup
}

// watch cuts sp when ctx ends, or at once (on another goroutine) when it
// has ended already. sp.unwatch undoes it.
func (sp *splicer) watch(ctx context.Context) {
	if ctx.Done() == nil { // never ends
		return
	}
	sp.watched = true
	if reflect.TypeOf(ctx).Kind() != reflect.Pointer {
		// A context that is a value may not be usable as a map key
		// (a field holding a slice would make the map panic): it gets
		// an AfterFunc of its own.
		sp.stopWatch = context.AfterFunc(ctx, func() { sp.cancel(ctx.Err()) })
		return
	}
	watching.mu.Lock()
	g := watching.groups[ctx]
	if g == nil {
		if watching.groups == nil {
			watching.groups = make(map[context.Context]*watchGroup)
		}
		g = &watchGroup{ctx: ctx}
		watching.groups[ctx] = g
		g.stop = context.AfterFunc(ctx, g.fire)
	}
	if g.fired {
		watching.mu.Unlock()
		go sp.cancel(ctx.Err())
		return
	}
	sp.group = g
	sp.next = g.head
	if g.head != nil {
		g.head.prev = sp
	}
	g.head = sp
	watching.mu.Unlock()
}

// unwatch takes sp off its context's list; the last splicer to leave
// stops the context's AfterFunc when more than keepGroups contexts are
// watched.
func (sp *splicer) unwatch() {
	if !sp.watched {
		return
	}
	if sp.stopWatch != nil {
		sp.stopWatch()
		return
	}
	watching.mu.Lock()
	if g := sp.group; g != nil {
		g.unlink(sp)
		if g.head == nil && !g.fired && len(watching.groups) > keepGroups {
			g.stop()
			delete(watching.groups, g.ctx)
		}
	}
	watching.mu.Unlock()
}

// unlink takes sp off g's list; the caller holds watching.mu.
func (g *watchGroup) unlink(sp *splicer) {
	if sp.prev != nil {
		sp.prev.next = sp.next
	} else {
		g.head = sp.next
	}
	if sp.next != nil {
		sp.next.prev = sp.prev
	}
	sp.group, sp.next, sp.prev = nil, nil, nil
}

// fire cuts every splicer of g, whose context ended, one at a time
// outside the lock (a cut may end a splice, which leaves the list).
func (g *watchGroup) fire() {
	watching.mu.Lock()
	g.fired = true
	delete(watching.groups, g.ctx)
	for g.head != nil {
		sp := g.head
		g.unlink(sp)
		watching.mu.Unlock()
		sp.cancel(g.ctx.Err())
		watching.mu.Lock()
	}
	watching.mu.Unlock()
}
