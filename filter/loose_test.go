package filter_test

import (
	"testing"

	"github.com/sluiceproxy/sluice/filter"
	"github.com/sluiceproxy/sluice/rules"
)

// TestLooseGlobs checks the globs with no literal suffix, which Decide
// tries only on hosts whose first byte may start one, against the
// reference: with a literal prefix each, and with one that has none (then
// every host must try them).
func TestLooseGlobs(t *testing.T) {
	hosts := []string{"ads.example", "ads.x.y", "trk.example", "bx.example", "cx.a", "x.example",
		"example", "ads", "a", "zz.top", "b.ads.example", "1.2.3.4", "[::1]", "Ads.example", "é.x"}
	for _, tt := range []struct {
		name  string
		globs []string
	}{
		{"prefixed", []string{"ads.*", "trk*.*", "b?.*", "é.*"}},
		{"no prefix", []string{"ads.*", "{a,b,c}x.*"}},
		{"class", []string{"[b-c]x.*"}},
		{"star", []string{"trk.*", "*"}},
		{"none", []string{"*.example"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := newSet(rules.Allow, nil, r(t, "block", tt.globs...), r(t, "allow", ".example"))
			e := mustCompile(t, s)
			ref := newReference(t, s)
			for _, h := range hosts {
				agree(t, e, ref, filter.Request{Host: h})
			}
		})
	}
}
