package filter

import "testing"

func TestOrBlock(t *testing.T) {
	if d := OrBlock(nil); d == nil || d.Verdict != Block || d.Default || d.RuleName() != "" {
		t.Errorf("OrBlock(nil) = %+v; want a plain Block", d)
	}
	rd := &Decision{Verdict: Block, Reason: "loop"}
	if d := OrBlock(rd); d != rd {
		t.Errorf("OrBlock(rd) = %p; want rd itself (%p)", d, rd)
	}
}
