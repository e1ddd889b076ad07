package filter_test

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/sluiceproxy/sluice/filter"
	"github.com/sluiceproxy/sluice/rules"
)

// TestHeavySuffixes checks decisions under suffixes with many names below
// them ("co.uk", "blogspot.com", and deeper), whose names the index places
// by a longer base (see keyBase), against the reference.
func TestHeavySuffixes(t *testing.T) {
	var blk, alw []string
	for i := range 30 {
		blk = append(blk, fmt.Sprintf("shop%d.co.uk", i), fmt.Sprintf("u%d.blogspot.com", i),
			fmt.Sprintf("p%d.deep.u1.blogspot.com", i), fmt.Sprintf("q%d.x.p1.deep.u1.blogspot.com", i))
	}
	blk = append(blk, "co.uk", "trailing.dot.", "a..b.co.uk", "one")
	alw = append(alw, "ok.shop3.co.uk", "p2.deep.u1.blogspot.com")
	cats := map[string]*rules.CategoryList{"c": {Name: "c", Block: blk, Allow: alw}}
	s := newSet(rules.Allow, cats,
		r(t, "allow", "exact.shop5.co.uk", ".p7.deep.u1.blogspot.com", "*.q3.x.p1.deep.u1.blogspot.com"),
		r(t, "block", "category:c"),
		r(t, "block", "**.co.uk", "t?.u9.blogspot.com"))
	e := mustCompile(t, s)
	ref := newReference(t, s)
	var hosts []string
	for _, d := range append(blk, alw...) {
		hosts = append(hosts, d, "www."+d, "a.b."+d, "x"+d, d+".", d[1:])
	}
	hosts = append(hosts, "exact.shop5.co.uk", "a.exact.shop5.co.uk", "p7.deep.u1.blogspot.com",
		"z.p7.deep.u1.blogspot.com", "w.q3.x.p1.deep.u1.blogspot.com", "tq.u9.blogspot.com",
		"uk", "blogspot.com", "deep.u1.blogspot.com", "x.p1.deep.u1.blogspot.com", "nothing.example",
		"co.uk.", ".co.uk", "a.b.", ".", "..", "one", "x.one", "1.2.3.4", "[::1]")
	for _, h := range hosts {
		agree(t, e, ref, filter.Request{Host: h, Client: netip.MustParseAddr("192.0.2.1")})
	}
}
