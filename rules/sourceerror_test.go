package rules

import (
	"fmt"
	"strings"
	"testing"
)

// TestSourceErrorSaysTheSourceOnce: an unusable remote source is named
// once, not again by its cause.
func TestSourceErrorSaysTheSourceOnce(t *testing.T) {
	src := Source{URL: "https://u:pw@lists.example/x.txt"}
	e := &SourceError{Category: "ads", Source: src,
		Err: fmt.Errorf("rules: %s: %w (no cache file /c/x.list)", src, ErrNotDownloaded)}
	want := "category ads: source https://u:xxxxx@lists.example/x.txt is unusable: not downloaded yet (no cache file /c/x.list) (run 'sluice list update', or mark it {url: URL, optional: true})"
	if got := e.Error(); got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	if strings.Contains(e.Error(), "pw@") {
		t.Error("password shown")
	}
}
