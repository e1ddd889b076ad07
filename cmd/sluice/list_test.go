package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice/rules"
)

// run executes the CLI in-process with args and stdin, and returns what it
// wrote to stdout and the error RunE returned.
func run(t *testing.T, stdin io.Reader, args ...string) (string, error) {
	t.Helper()
	root := newRoot()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	if stdin == nil {
		stdin = strings.NewReader("")
	}
	root.SetIn(stdin)
	root.SetArgs(args)
	err := root.Execute()
	if errOut.Len() > 0 {
		t.Logf("stderr of %q:\n%s", args, errOut.String())
	}
	return out.String(), err
}

// mustRun runs the CLI and fails the test on error.
func mustRun(t *testing.T, args ...string) string {
	t.Helper()
	out, err := run(t, nil, args...)
	if err != nil {
		t.Fatalf("%q: %v\n%s", args, err, out)
	}
	return out
}

// exitCode is the status main would exit with for err.
func exitCode(err error) int {
	var ee *exitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.code
	}
	return 2
}

// writeFiles creates files (name -> content) in a temporary folder and
// returns the folder.
func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func readText(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

const socialConfig = `# My gateway
listen: 127.0.0.1:3128   # loopback only
categories:
  # social networks
  social:
    - social.txt   # edited by list add
rules:
  - block: category:social
`

const socialList = "# social list\r\nfacebook.com\r\n\r\n# short video\r\ntiktok.com   # inline comment\r\n"

func TestListAddRmKeepsComments(t *testing.T) {
	dir := writeFiles(t, map[string]string{"sluice.yaml": socialConfig, "social.txt": socialList})
	cfg := filepath.Join(dir, "sluice.yaml")
	list := filepath.Join(dir, "social.txt")

	out := mustRun(t, "list", "-c", cfg, "add", "social", "Instagram.COM.", "tiktok.com", "snapchat.com")
	for _, want := range []string{"+ instagram.com\n", "  tiktok.com (already listed)\n", "+ snapchat.com\n", "social: 2 added to " + list} {
		if !strings.Contains(out, want) {
			t.Errorf("add output lacks %q:\n%s", want, out)
		}
	}
	want := socialList + "instagram.com\r\nsnapchat.com\r\n"
	if got := readText(t, list); got != want {
		t.Errorf("after add:\n%q\nwant\n%q", got, want)
	}
	if got := readText(t, filepath.Join(dir, "sluice.yaml")); got != socialConfig {
		t.Errorf("config changed by adding to an existing file:\n%s", got)
	}

	out = mustRun(t, "list", "-c", cfg, "rm", "social", "tiktok.com", "instagram.com", "nothere.example")
	for _, want := range []string{"- tiktok.com (" + list + ")", "- instagram.com (" + list + ")", "nothere.example: not listed in social", "social: 2 removed"} {
		if !strings.Contains(out, want) {
			t.Errorf("rm output lacks %q:\n%s", want, out)
		}
	}
	want = "# social list\r\nfacebook.com\r\n\r\n# short video\r\nsnapchat.com\r\n"
	if got := readText(t, list); got != want {
		t.Errorf("after rm:\n%q\nwant\n%q", got, want)
	}
}

func TestListAddNewCategory(t *testing.T) {
	dir := writeFiles(t, map[string]string{"sluice.yaml": socialConfig, "social.txt": socialList})
	cfg := filepath.Join(dir, "sluice.yaml")
	out := mustRun(t, "list", "-c", cfg, "add", "ads", "ads.example", "tracker.example")
	newFile := filepath.Join(dir, "lists", "ads.txt")
	for _, want := range []string{"created " + newFile, "added lists/ads.txt to category ads", "+ ads.example", "ads: 2 added"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	text := readText(t, cfg)
	for _, want := range []string{"# My gateway\n", "# social networks\n", "# edited by list add\n", "ads:"} {
		if !strings.Contains(text, want) {
			t.Errorf("config lacks %q:\n%s", want, text)
		}
	}
	if !strings.HasSuffix(readText(t, newFile), "ads.example\ntracker.example\n") {
		t.Errorf("new list:\n%s", readText(t, newFile))
	}
	set, err := rules.Load(cfg)
	if err != nil {
		t.Fatalf("config no longer loads: %v\n%s", err, text)
	}
	if got := set.Categories["ads"]; got == nil || strings.Join(got.Block, ",") != "ads.example,tracker.example" {
		t.Errorf("ads = %+v", got)
	}
	if got := set.Categories["social"]; got == nil || len(got.Block) != 2 {
		t.Errorf("social = %+v", got)
	}
	mustRun(t, "config", "validate", "-c", cfg)

	// A second add goes to the file just made, not a new one.
	mustRun(t, "list", "-c", cfg, "add", "ads", "more.example")
	if got := readText(t, cfg); got != text {
		t.Errorf("config changed again:\n%s", got)
	}
}

func TestListAddErrors(t *testing.T) {
	dir := writeFiles(t, map[string]string{"sluice.yaml": socialConfig, "social.txt": socialList})
	cfg := filepath.Join(dir, "sluice.yaml")
	tests := []struct {
		name string
		args []string
		code int
	}{
		{"no config", []string{"list", "add", "social", "a.example"}, 2},
		{"bad domain", []string{"list", "-c", cfg, "add", "social", "not a domain"}, 2},
		{"bad category", []string{"list", "-c", cfg, "add", "../etc", "a.example"}, 2},
		{"rm unknown category", []string{"list", "-c", cfg, "rm", "nope", "a.example"}, 2},
		{"too few args", []string{"list", "-c", cfg, "add", "social"}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := run(t, nil, tt.args...)
			if got := exitCode(err); got != tt.code {
				t.Errorf("exit %d (%v), want %d\n%s", got, err, tt.code, out)
			}
			if got := readText(t, filepath.Join(dir, "social.txt")); got != socialList {
				t.Errorf("list changed:\n%q", got)
			}
			if got := readText(t, cfg); got != socialConfig {
				t.Errorf("config changed:\n%s", got)
			}
		})
	}
}

func TestListTest(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"sluice.yaml": socialConfig + "  - block: category:ads\n",
		"social.txt":  socialList,
		"ads.txt":     "||doubleclick.net^\n@@||ok.doubleclick.net^\n||tiktok.com^\n",
	})
	cfg := filepath.Join(dir, "sluice.yaml")
	if err := rules.AddCategorySource(cfg, "ads", "ads.txt"); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		host string
		code int
		want []string
	}{
		{"www.TikTok.com", 0, []string{
			"ads: " + filepath.Join(dir, "ads.txt") + ":3: entry tiktok.com\n",
			"social: " + filepath.Join(dir, "social.txt") + ":5: entry tiktok.com\n",
		}},
		{"a.ok.doubleclick.net", 0, []string{
			"ads: " + filepath.Join(dir, "ads.txt") + ":1: entry doubleclick.net\n",
			"ads: " + filepath.Join(dir, "ads.txt") + ":2: exception ok.doubleclick.net\n",
		}},
		{"example.org", 1, []string{"example.org: in no category\n"}},
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			out, err := run(t, nil, "list", "-c", cfg, "test", tt.host)
			if got := exitCode(err); got != tt.code {
				t.Errorf("exit %d (%v), want %d", got, err, tt.code)
			}
			if got, want := out, strings.Join(tt.want, ""); got != want {
				t.Errorf("output:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

func TestListShow(t *testing.T) {
	dir := writeFiles(t, map[string]string{"sluice.yaml": socialConfig, "social.txt": socialList})
	cfg := filepath.Join(dir, "sluice.yaml")
	tests := []struct {
		args []string
		out  string
		code int
	}{
		{[]string{"social"}, "facebook.com\ntiktok.com\n", 0},
		{[]string{"social", "--grep", "TIK"}, "tiktok.com\n", 0},
		{[]string{"social", "--grep", "nothing"}, "", 1},
		{[]string{"nope"}, "", 2},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			out, err := run(t, nil, append([]string{"list", "-c", cfg, "show"}, tt.args...)...)
			if got := exitCode(err); got != tt.code {
				t.Errorf("exit %d (%v), want %d", got, err, tt.code)
			}
			if out != tt.out {
				t.Errorf("output %q, want %q", out, tt.out)
			}
		})
	}
}

// TestListDuplicateAcrossSources: a domain that two sources of a category
// list is shown once by `list show` and counted once by `list` and
// `config validate`, while each source's own count keeps it.
func TestListDuplicateAcrossSources(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"sluice.yaml": "categories:\n  ads: [a.txt, b.txt]\nrules:\n  - block: [category:ads]\n",
		"a.txt":       "ads.example.com\ntracker.example.org\n",
		"b.txt":       "ads.example.com\n",
	})
	cfg := filepath.Join(dir, "sluice.yaml")
	if out := mustRun(t, "list", "-c", cfg, "show", "ads", "--grep", "example"); out != "ads.example.com\ntracker.example.org\n" {
		t.Errorf("list show: %q, want each entry once", out)
	}
	out := mustRun(t, "list", "-c", cfg)
	for _, want := range []string{"ads: 2 entries, 2 sources\n", "a.txt: 2 entries (plain)\n", "b.txt: 1 entry (plain)\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("list lacks %q:\n%s", want, out)
		}
	}
	if out := mustRun(t, "config", "validate", "-c", cfg); !strings.HasSuffix(out, ": ok: 1 rules, 1 categories, 2 category entries\n") {
		t.Errorf("config validate: %q", out)
	}
}

func TestListImport(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"sluice.yaml":       socialConfig,
		"social.txt":        socialList,
		"extra/hosts":       "0.0.0.0 a.example b.example\n127.0.0.1 localhost\n",
		"extra/more/x.list": "c.example\n",
	})
	cfg := filepath.Join(dir, "sluice.yaml")
	t.Chdir(dir) // a relative argument is relative to the working folder

	out := mustRun(t, "list", "-c", cfg, "import", "social", "extra/hosts")
	if !strings.Contains(out, "added source extra/hosts") || !strings.Contains(out, "2 entries (hosts)") {
		t.Errorf("output:\n%s", out)
	}
	out = mustRun(t, "list", "-c", cfg, "import", "games", filepath.Join(dir, "extra", "more"))
	if !strings.Contains(out, "games: added source extra/more") || !strings.Contains(out, "1 entry") {
		t.Errorf("output:\n%s", out)
	}
	out = mustRun(t, "list", "-c", cfg, "import", "games", "https://lists.example/games.txt")
	if !strings.Contains(out, "update games") {
		t.Errorf("output:\n%s", out)
	}
	out, err := run(t, nil, "list", "-c", cfg, "import", "social", "extra/hosts")
	if exitCode(err) != 1 || !strings.Contains(out, "already a source") {
		t.Errorf("second import (nothing to do: exit 1): exit %d: %s", exitCode(err), out)
	}
	if _, err := run(t, nil, "list", "-c", cfg, "import", "social", "ftp://x.example/l"); exitCode(err) != 2 {
		t.Errorf("ftp URL: %v", err)
	}
	if _, err := run(t, nil, "list", "-c", cfg, "import", "social", "missing.txt"); exitCode(err) != 2 {
		t.Errorf("missing file: %v", err)
	}

	set, err := rules.Load(cfg)
	if err != nil {
		t.Fatalf("config no longer loads: %v\n%s", err, readText(t, cfg))
	}
	if n := len(set.Categories["social"].Block); n != 4 {
		t.Errorf("social has %d entries, want 4", n)
	}
	if got := set.Categories["games"]; got == nil || len(got.Sources) != 2 || got.Sources[1].Source.URL == "" {
		t.Errorf("games = %+v", got)
	}
	if text := readText(t, cfg); !strings.Contains(text, "# social networks") {
		t.Errorf("comments lost:\n%s", text)
	}
	// The summary names every source; the URL is not downloaded yet.
	out = mustRun(t, "list", "-c", cfg)
	for _, want := range []string{"games: 1 entry, 2 sources", "url https://lists.example/games.txt: 0 entries", "never downloaded", "social: 4 entries, 2 sources"} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
}

func TestListUpdate(t *testing.T) {
	var fail atomic.Bool
	var requests atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		if fail.Load() {
			http.Error(w, "down", http.StatusInternalServerError)
			return
		}
		w.Header().Set("ETag", `"v1"`)
		http.ServeContent(w, r, "l.txt", time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC),
			strings.NewReader("0.0.0.0 ads.example\n0.0.0.0 tracker.example\n"))
	}))
	defer srv.Close()
	url := srv.URL + "/hosts.txt"
	dir := writeFiles(t, map[string]string{
		"sluice.yaml": fmt.Sprintf("categories:\n  ads:\n    - url: %s\n      refresh: 6h\nrules:\n  - block: category:ads\n", url),
	})
	cfg := filepath.Join(dir, "sluice.yaml")

	// Before any download the category is empty and the config still loads.
	out := mustRun(t, "list", "-c", cfg)
	if !strings.Contains(out, "ads: 0 entries") || !strings.Contains(out, "never downloaded; refreshed every 6h") {
		t.Errorf("summary before update:\n%s", out)
	}

	out = mustRun(t, "list", "-c", cfg, "update")
	want := "ads: fetching " + url + "\nads: " + url + ": updated, 2 entries (hosts), 44 B\n"
	if !strings.HasPrefix(out, want) {
		t.Errorf("update output:\n%s\nwant prefix:\n%s", out, want)
	}
	out = mustRun(t, "list", "-c", cfg, "update", "ads")
	if !strings.Contains(out, url+": not modified\n") {
		t.Errorf("second update:\n%s", out)
	}
	out = mustRun(t, "list", "-c", cfg, "test", "x.ads.example")
	if !strings.Contains(out, "ads: ") || !strings.Contains(out, ":1: entry ads.example") {
		t.Errorf("list test after update:\n%s", out)
	}
	out = mustRun(t, "list", "-c", cfg)
	if !strings.Contains(out, "ads: 2 entries") || !strings.Contains(out, "refreshed ") || !strings.Contains(out, "every 6h") {
		t.Errorf("summary after update:\n%s", out)
	}

	fail.Store(true)
	out, err := run(t, nil, "list", "-c", cfg, "update")
	if exitCode(err) != 1 || !strings.Contains(out, "\nads: "+url+": HTTP 500 Internal Server Error; keeping the copy of ") {
		t.Errorf("failing update: exit %d, %v\n%s", exitCode(err), err, out)
	}
	out = mustRun(t, "list", "-c", cfg)
	if !strings.Contains(out, "ads: 2 entries") || !strings.Contains(out, "failed: ") || !strings.Contains(out, "HTTP 500") {
		t.Errorf("summary after a failure:\n%s", out)
	}
	if n := requests.Load(); n != 3 {
		t.Errorf("%d requests, want 3", n)
	}

	if _, err := run(t, nil, "list", "-c", cfg, "update", "nope"); exitCode(err) != 2 {
		t.Errorf("unknown category: %v", err)
	}
	if out, err := run(t, nil, "list", "update"); exitCode(err) != 1 || out != "no remote sources: nothing to download\n" {
		t.Errorf("default config (nothing to do: exit 1): exit %d: %q", exitCode(err), out)
	}
}

func TestFormatHelpers(t *testing.T) {
	tests := []struct{ got, want string }{
		{thousands(0), "0"},
		{thousands(999), "999"},
		{thousands(1000), "1,000"},
		{thousands(4500000), "4,500,000"},
		{entries(1), "1 entry"},
		{entries(12345), "12,345 entries"},
		{byteSize(44), "44 B"},
		{byteSize(1536), "1.5 KiB"},
		{byteSize(256 << 20), "256.0 MiB"},
		{period(24 * time.Hour), "24h"},
		{period(90 * time.Minute), "1h30m"},
		{period(30 * time.Second), "30s"},
		{agoString(time.Unix(1000, 0), time.Unix(970, 0)), "30s"},
		{agoString(time.Unix(100000, 0), time.Unix(100000-3*3600, 0)), "3h"},
		{agoString(time.Unix(1000000, 0), time.Unix(1000000-5*86400, 0)), "5d"},
	}
	for i, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%d: got %q, want %q", i, tt.got, tt.want)
		}
	}
}

func TestProgressBar(t *testing.T) {
	tests := []struct {
		name        string
		read, total int64
		want        string
	}{
		{"half", 512, 1024, "\r\033[Kads: [===============               ] 512 B / 1.0 KiB"},
		{"done", 1024, 1024, "\r\033[Kads: [==============================] 1.0 KiB / 1.0 KiB"},
		{"unknown length", 2048, -1, "\r\033[Kads: 2.0 KiB"},
		{"over the announced length", 2048, 1024, "\r\033[Kads: [==============================] 2.0 KiB / 1.0 KiB"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			b := &progressBar{w: &buf, label: "ads"}
			b.update(tt.read, tt.total)
			if buf.String() != tt.want {
				t.Errorf("got %q, want %q", buf.String(), tt.want)
			}
		})
	}
}

// list add and list test take what people paste: URLs, *.domain, upper case.
func TestListPastedEntries(t *testing.T) {
	dir := writeFiles(t, map[string]string{"sluice.yaml": socialConfig, "social.txt": socialList})
	cfg := filepath.Join(dir, "sluice.yaml")
	list := filepath.Join(dir, "social.txt")
	out := mustRun(t, "list", "-c", cfg, "add", "social", "https://www.YouTube.com/watch?v=dQw4w9WgXcQ", "*.Discord.com", "TIKTOK.COM", "www.reddit.com/r/golang/")
	for _, want := range []string{"+ www.youtube.com\n", "+ discord.com\n", "  tiktok.com (already listed)\n", "+ www.reddit.com\n", "social: 3 added"} {
		if !strings.Contains(out, want) {
			t.Errorf("add output lacks %q:\n%s", want, out)
		}
	}
	if got, want := readText(t, list), socialList+"www.youtube.com\r\ndiscord.com\r\nwww.reddit.com\r\n"; got != want {
		t.Errorf("list:\n%q\nwant\n%q", got, want)
	}
	for _, arg := range []string{"https://www.tiktok.com/@someone/video/1?lang=en", "*.TikTok.com", "M.TIKTOK.COM."} {
		out, err := run(t, nil, "list", "-c", cfg, "test", arg)
		if err != nil || !strings.Contains(out, "social: "+list+":5: entry tiktok.com\n") {
			t.Errorf("test %q: %v\n%s", arg, err, out)
		}
	}
	out = mustRun(t, "list", "-c", cfg, "rm", "social", "https://discord.com/channels/1")
	if !strings.Contains(out, "- discord.com ("+list+")") {
		t.Errorf("rm output:\n%s", out)
	}
	if _, err := run(t, nil, "list", "-c", cfg, "add", "social", "https://"); exitCode(err) != 2 {
		t.Errorf("add of a URL without host: %v", err)
	}
}
