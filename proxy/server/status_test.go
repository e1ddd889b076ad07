package server

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice/proxy/observe"
)

// TestStatusPage renders the status page of a server whose clock is a
// test's: traffic spread over the hour shows as bars of the right minutes
// and heights, blocked hosts and categories are ranked, a list with an
// invalid line is listed with its problem, and a host name cannot inject
// markup. With $SLUICE_SCREENSHOTS set, the page is also written there.
func TestStatusPage(t *testing.T) {
	cfg := writeConfig(t, `
listen: ["127.0.0.1:0"]
default: allow
categories:
  games: [games.txt]
rules:
  - block: ["category:games"]
`, map[string]string{"games.txt": "games.test\nplay.test\nthis is not a domain\n"})
	s, err := New(Options{Config: cfg, Logger: quietLogger(), Version: "1.2.3-test"})
	if err != nil {
		t.Fatal(err)
	}
	clk := newFakeClock()
	s.m = newMetrics(s, clk.now)
	// Minute 0: 5 requests, 3 blocked; 30 minutes later: 10, 1 blocked;
	// now (59 minutes on): 2, none blocked.
	traffic := func(n, blocked int, host, category string) {
		for i := range n {
			a := observe.Access{Frontend: observe.HTTP, Verdict: observe.Allow, Host: "ok.test"}
			if i < blocked {
				a.Verdict, a.Host, a.Category = observe.Block, host, category
			}
			s.m.observe(a)
		}
	}
	traffic(5, 3, "games.test", "games")
	clk.advance(30 * time.Minute)
	traffic(10, 1, "<b>x</b>.test", "")
	clk.advance(29 * time.Minute)
	traffic(2, 0, "", "")
	s.m.reloaded(clk.now(), os.ErrPermission)

	a := &adminServer{s: s}
	rec := httptest.NewRecorder()
	a.status(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	page := rec.Body.String()
	if rec.Code != 200 || rec.Header().Get("Content-Type") != "text/html; charset=utf-8" {
		t.Fatalf("status page: %d %q", rec.Code, rec.Header().Get("Content-Type"))
	}
	if dir := os.Getenv("SLUICE_SCREENSHOTS"); dir != "" {
		os.WriteFile(filepath.Join(dir, "status-unit.html"), []byte(page), 0o644)
	}
	for _, want := range []string{
		"version 1.2.3-test",
		`<meta http-equiv="refresh" content="10">`,
		`<b id="requests">17</b>`, `<b id="blocks">4</b>`,
		"<title>-59m: 5 requests, 3 blocked</title>",
		"<title>-29m: 10 requests, 1 blocked</title>",
		"<title>now: 2 requests, 0 blocked</title>",
		`<td>games</td><td class="n">3</td>`,
		`<td>games.test</td><td class="n">3</td>`,
		`<td>&lt;b&gt;x&lt;/b&gt;.test</td>`,
		"failed: permission denied",
		"this is not a domain",
		"games.txt",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("status page lacks %q", want)
		}
	}
	if strings.Contains(page, "<b>x</b>") {
		t.Error("a host name's markup reached the page unescaped")
	}
	// The tallest bar (10 requests) fills the plot; 5 is half of it.
	heights := regexp.MustCompile(`class="req" x="\d+" y="\d+" width="\d+" height="(\d+)"`).FindAllStringSubmatch(page, -1)
	if len(heights) != ringMinutes {
		t.Fatalf("%d bars, want %d", len(heights), ringMinutes)
	}
	if heights[0][1] != "90" || heights[30][1] != "180" || heights[59][1] != "36" || heights[1][1] != "0" {
		t.Errorf("bar heights: first %s, middle %s, last %s, second %s; want 90, 180, 36, 0",
			heights[0][1], heights[30][1], heights[59][1], heights[1][1])
	}
}
