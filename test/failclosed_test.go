package test

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// acceptOrigin is a loopback HTTP origin that counts the TCP connections
// it accepts: the proof that a blocked request was never dialed.
type acceptOrigin struct {
	port    string
	accepts atomic.Int64
}

type acceptCountingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l acceptCountingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

func newAcceptOrigin(t *testing.T) *acceptOrigin {
	t.Helper()
	o := &acceptOrigin{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "origin")
	}))
	srv.Listener = acceptCountingListener{ln, &o.accepts}
	srv.Start()
	t.Cleanup(srv.Close)
	_, o.port, _ = net.SplitHostPort(ln.Addr().String())
	return o
}

// hammer requests url through the proxy from 4 Go clients until stop is
// closed (at most 2,000 requests each, at most 60 s), and counts the
// answers that were not the proxy's 403.
type hammer struct {
	sent, notBlocked atomic.Int64
	stop             chan struct{}
	wg               sync.WaitGroup
	mu               sync.Mutex
	firstLeak        string
}

func startHammer(t *testing.T, p *proc, target string) *hammer {
	t.Helper()
	h := &hammer{stop: make(chan struct{})}
	proxyURL, _ := url.Parse("http://" + p.addr)
	client := &http.Client{
		Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL), DisableKeepAlives: true},
		Timeout:   10 * time.Second,
	}
	deadline := time.Now().Add(60 * time.Second)
	for range 4 {
		h.wg.Go(func() {
			for i := 0; i < 2000 && time.Now().Before(deadline); i++ {
				select {
				case <-h.stop:
					return
				default:
				}
				h.sent.Add(1)
				resp, err := client.Get(target)
				if err == nil {
					resp.Body.Close()
				}
				if err != nil || resp.StatusCode != http.StatusForbidden {
					h.notBlocked.Add(1)
					h.mu.Lock()
					if h.firstLeak == "" {
						h.firstLeak = fmt.Sprintf("%v %v", err, resp)
					}
					h.mu.Unlock()
				}
				time.Sleep(2 * time.Millisecond)
			}
		})
	}
	return h
}

// end stops the clients and fails the test if any request was not
// refused with 403, or if the origin accepted any connection.
func (h *hammer) end(t *testing.T, o *acceptOrigin, what string) {
	t.Helper()
	close(h.stop)
	h.wg.Wait()
	if h.sent.Load() == 0 {
		t.Fatalf("%s: no request was sent", what)
	}
	if n := h.notBlocked.Load(); n != 0 {
		t.Errorf("%s: %d of %d requests to the blocked host were not refused (first: %s)", what, n, h.sent.Load(), h.firstLeak)
	}
	if n := o.accepts.Load(); n != 0 {
		t.Errorf("%s: the origin accepted %d connections", what, n)
	}
	if !t.Failed() {
		t.Logf("%s: %d requests, all refused with 403", what, h.sent.Load())
	}
}

// TestEmptyConfigRefusedAtStart: serve and validate refuse an empty or
// comments-only config, and one without rules, default or listen, naming
// the file.
func TestEmptyConfigRefusedAtStart(t *testing.T) {
	for name, cfg := range map[string]string{
		"empty": "", "comments only": "# sluice config\n# nothing yet\n", "only categories": "categories:\n  a: [a.txt]\n",
	} {
		dir, path := writeConfig(t, cfg, map[string]string{"a.txt": "a.test\n"})
		for _, cmd := range [][]string{{"serve", "--config", path}, {"config", "validate", "--config", path}} {
			out, code := runCLI(t, dir, cmd...)
			if code != 2 || !regexp.MustCompile(regexp.QuoteMeta(path)+"(:1)?: no `rules`, `default` or `listen` key").MatchString(out) {
				t.Errorf("%s: sluice %s: exit %d, want 2 and an error naming %s:\n%s", name, cmd[0], code, path, out)
			}
		}
	}
}

// waitWatching rewrites file unchanged until the server reloads: the
// file watcher starts beside the listeners, not before them, and a change
// made before it watches would go unseen.
func waitWatching(t *testing.T, p *proc, file string) {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	before := strings.Count(p.Log(), "rules reloaded")
	for i := 0; i < 5 && strings.Count(p.Log(), "rules reloaded") == before; i++ {
		if err := os.WriteFile(file, data, 0o644); err != nil {
			t.Fatal(err)
		}
		for j := 0; j < 40 && strings.Count(p.Log(), "rules reloaded") == before; j++ {
			time.Sleep(50 * time.Millisecond)
		}
	}
	eventually(t, "the file watcher reloads", func() bool { return strings.Count(p.Log(), "rules reloaded") > before })
}

const blockConfig = `default: allow
hosts: {blocked.test: 127.0.0.1, bad.test: 127.0.0.1}
categories:
  bad: [lists/bad.txt]
rules:
  - block: [blocked.test, 127.0.0.1, "category:bad"]
`

// TestConfigRewrittenInStepsNeverOpens: the config is truncated (or
// rewritten as comments only), left so for longer than the watcher waits,
// then written in full, while clients hammer a blocked host: the running
// rules stay, not one request is allowed, and validate shows the error.
func TestConfigRewrittenInStepsNeverOpens(t *testing.T) {
	o := newAcceptOrigin(t)
	p := startSluice(t, blockConfig, map[string]string{"lists/bad.txt": "bad.test\n"})
	cfg := filepath.Join(p.dir, "sluice.yaml")
	full, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	waitWatching(t, p, cfg)
	// An IP literal: the config's hosts: mapping goes with the config.
	h := startHammer(t, p, "http://127.0.0.1:"+o.port+"/")
	for i, first := range []string{"", "# rewritten by config management\n"} {
		failed := strings.Count(p.Log(), "reload failed")
		reloaded := strings.Count(p.Log(), "rules reloaded")
		f, err := os.OpenFile(cfg, os.O_WRONLY|os.O_TRUNC, 0o644) // step 1: truncate
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString(first)
		f.Sync()
		// Whatever the server makes of the half-written file, it must
		// not be new rules: the hammer counts what gets through.
		eventually(t, "the half-written config is read", func() bool {
			return strings.Count(p.Log(), "reload failed") > failed || strings.Count(p.Log(), "rules reloaded") > reloaded
		})
		if strings.Count(p.Log(), "reload failed") <= failed {
			t.Errorf("step %d: the half-written config was not refused", i)
		}
		reloaded = strings.Count(p.Log(), "rules reloaded")
		out, code := runCLI(t, p.dir, "config", "validate", "--config", cfg)
		if code != 2 || !strings.Contains(out, "no `rules`") {
			t.Errorf("step %d: validate on the half-written config: exit %d:\n%s", i, code, out)
		}
		time.Sleep(time.Second)
		f.Write(full) // step 2: the rest, a second later
		f.Close()
		eventually(t, "the full config is reloaded", func() bool { return strings.Count(p.Log(), "rules reloaded") > reloaded })
	}
	h.end(t, o, "config rewritten in two steps")
	if !regexp.MustCompile(`reload failed; keeping the running rules.*sluice.yaml.*no .rules., .default. or .listen. key`).MatchString(p.Log()) {
		t.Errorf("the log does not say why the reload failed:\n%s", p.Log())
	}
}

// TestBrokenListKeepsBlocking: a local list that is emptied, deleted,
// replaced by a folder or by content that is not a list keeps its last good
// entries on reload while clients hammer one of them; `sluice list` and
// `sluice config validate` (exit 1) show the error.
func TestBrokenListKeepsBlocking(t *testing.T) {
	o := newAcceptOrigin(t)
	p := startSluice(t, blockConfig, map[string]string{"lists/bad.txt": "# bad sites\nbad.test\n"})
	cfg := filepath.Join(p.dir, "sluice.yaml")
	list := filepath.Join(p.dir, "lists", "bad.txt")
	waitWatching(t, p, cfg)
	h := startHammer(t, p, "http://www.bad.test:"+o.port+"/")
	breakers := []struct {
		name  string
		apply func() error
	}{
		{"emptied", func() error { return os.WriteFile(list, nil, 0o644) }},
		{"deleted", func() error { return os.Remove(list) }},
		{"a folder in its place", func() error {
			if err := os.Remove(list); err != nil {
				return err
			}
			return os.Mkdir(list, 0o755)
		}},
		{"not a list", func() error {
			return os.WriteFile(list, []byte(strings.Repeat("<tr><td>Error 502</td></tr>\n", 1500)), 0o644)
		}},
	}
	for _, b := range breakers {
		kept := strings.Count(p.Log(), "keeping its last good entries")
		before := strings.Count(p.Log(), "rules reloaded") + strings.Count(p.Log(), "reload failed")
		if err := b.apply(); err != nil {
			t.Fatal(err)
		}
		eventually(t, b.name+": the server reloads", func() bool {
			return strings.Count(p.Log(), "rules reloaded")+strings.Count(p.Log(), "reload failed") > before
		})
		if strings.Count(p.Log(), "keeping its last good entries") <= kept {
			t.Errorf("%s: the log does not say the last good entries are kept", b.name)
		}
		if s := statusOf(t, p, "http://bad.test:"+o.port+"/"); s != "403" {
			t.Errorf("%s: bad.test: %s, want 403", b.name, s)
		}
		out, code := runCLI(t, p.dir, "list", "--config", cfg)
		if code != 0 || !strings.Contains(out, "ERROR") || !strings.Contains(out, "last good copy: 1 entry") {
			t.Errorf("%s: sluice list: exit %d, want the error and the last good copy:\n%s", b.name, code, out)
		}
		out, code = runCLI(t, p.dir, "config", "validate", "--config", cfg)
		if code != 1 || !strings.Contains(out, cfg+":5: category bad: source "+list+" is unusable") {
			t.Errorf("%s: validate: exit %d, want 1 naming %s:5:\n%s", b.name, code, cfg, out)
		}
		reloaded := strings.Count(p.Log(), "rules reloaded")
		os.RemoveAll(list)
		if err := os.WriteFile(list, []byte("bad.test\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the repaired list is reloaded", func() bool { return strings.Count(p.Log(), "rules reloaded") > reloaded })
	}
	h.end(t, o, "list broken four ways")
}

// TestStartRefusesUnusableSources: serve refuses to start, and validate
// exits 1, on a source a rule uses that is missing, empty, comments only,
// a UT1 folder without domains, or a remote list that cannot be fetched;
// both name the config file and the source's line. The same source marked
// optional starts, and `sluice list` marks its category EMPTY. A category
// no rule uses is only a warning; an `only:` name that is no folder is a
// config error (exit 2).
func TestStartRefusesUnusableSources(t *testing.T) {
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusBadGateway)
	}))
	defer down.Close()
	cases := []struct {
		name, source string
		files        map[string]string
	}{
		{"missing file", "lists/nosuch.txt", nil},
		{"empty file", "lists/bad.txt", map[string]string{"lists/bad.txt": ""}},
		{"comments only", "lists/bad.txt", map[string]string{"lists/bad.txt": "# to do\n"}},
		{"empty folder", "lists/dir", map[string]string{"lists/dir/.keep": ""}},
		{"remote list failing", down.URL + "/list.txt", nil},
	}
	for _, c := range cases {
		cfg := "default: allow\ncategories:\n  bad: [\"" + c.source + "\"]\nrules:\n  - block: [\"category:bad\"]\n"
		dir, path := writeConfig(t, cfg, c.files)
		want := path + ":3: category bad: source "
		out, code := runCLI(t, dir, "serve", "--config", path, "--listen", "127.0.0.1:0")
		if code != 2 || !strings.Contains(out, want) || !strings.Contains(out, "optional: true") {
			t.Errorf("%s: serve: exit %d, want 2 and %q:\n%s", c.name, code, want, out)
		}
		out, code = runCLI(t, dir, "config", "validate", "--config", path)
		if c.name == "remote list failing" {
			// validate never downloads: a list not downloaded yet is for serve to fetch.
			if code != 0 || !strings.Contains(out, "not downloaded yet") {
				t.Errorf("%s: validate: exit %d, want 0 and a warning:\n%s", c.name, code, out)
			}
			continue
		}
		if code != 1 || !strings.Contains(out, want) {
			t.Errorf("%s: validate: exit %d, want 1 and %q:\n%s", c.name, code, want, out)
		}
	}

	// UT1: a category folder without domains, used by a rule.
	ut1 := "default: allow\ncategory_dirs:\n  - path: bl\nrules:\n  - block: [\"category:gambling\"]\n"
	dir, path := writeConfig(t, ut1, map[string]string{"bl/gambling/urls": "casino.test/poker\n", "bl/ads/domains": "ads.test\n"})
	out, code := runCLI(t, dir, "serve", "--config", path, "--listen", "127.0.0.1:0")
	if code != 2 || !strings.Contains(out, path+":3: category gambling: source") || !strings.Contains(out, "domains") {
		t.Errorf("UT1 without domains: serve: exit %d:\n%s", code, out)
	}
	// only: names a folder that does not exist.
	only := "default: allow\ncategory_dirs:\n  - path: bl\n    only: [ads, gamblign]\n"
	dir, path = writeConfig(t, only, map[string]string{"bl/ads/domains": "ads.test\n"})
	for _, cmd := range [][]string{{"serve", "--config", path, "--listen", "127.0.0.1:0"}, {"config", "validate", "--config", path}} {
		out, code := runCLI(t, dir, cmd...)
		if code != 2 || !strings.Contains(out, path+`:4: category_dirs: only: no category folder "gamblign"`) {
			t.Errorf("only: names no folder: %s: exit %d:\n%s", cmd[0], code, out)
		}
	}

	// optional: true starts, with a warning; `sluice list` marks the category.
	o := newAcceptOrigin(t)
	opt := "default: allow\nhosts: {fine.test: 127.0.0.1}\ncategories:\n  bad: [{file: lists/nosuch.txt, optional: true}]\n" +
		"  unused: [lists/nosuch.txt]\nrules:\n  - block: [\"category:bad\"]\n"
	dir, path = writeConfig(t, opt, nil)
	out, code = runCLI(t, dir, "config", "validate", "--config", path)
	if code != 0 || !strings.Contains(out, "warning: category bad") || !strings.Contains(out, "warning: category unused") {
		t.Errorf("optional: validate: exit %d, want 0 with warnings:\n%s", code, out)
	}
	p := runSluice(t, dir, "serve", "--config", path, "--listen", "127.0.0.1:0")
	if s := statusOf(t, p, "http://fine.test:"+o.port+"/"); s != "200" {
		t.Errorf("optional: fine.test: %s", s)
	}
	out, code = runCLI(t, dir, "list", "--config", path)
	if code != 0 || !regexp.MustCompile(`(?m)^bad: 0 entries, 1 source  EMPTY: the rules use it`).MatchString(out) ||
		!strings.Contains(out, "(optional)") {
		t.Errorf("optional: sluice list: exit %d:\n%s", code, out)
	}
}

// TestValidateExitCodes: 0 for a config serve starts on (warnings
// included), 1 for an unusable source a rule needs, 2 for an invalid config.
func TestValidateExitCodes(t *testing.T) {
	base := "default: allow\ncategories:\n  bad: [lists/bad.txt]\nrules:\n  - block: [\"category:bad\"]\n"
	for _, c := range []struct {
		name, cfg, list string
		code            int
		want            string
	}{
		{"ok", base, "bad.test\n", 0, ": ok: 1 rules"},
		{"invalid lines warn", base, "bad.test\nnot a domain\n", 0, "warning: category bad"},
		{"empty list", base, "", 1, "error: "},
		{"unknown category", base + "  - block: [\"category:nosuch\"]\n", "bad.test\n", 2, `unknown category "nosuch"`},
		{"missing users file", base + "users: nosuch.htpasswd\n", "bad.test\n", 2, "sluice.yaml:6: users: "},
	} {
		dir, path := writeConfig(t, c.cfg, map[string]string{"lists/bad.txt": c.list})
		out, code := runCLI(t, dir, "config", "validate", "--config", path)
		if code != c.code || !strings.Contains(out, c.want) {
			t.Errorf("%s: exit %d, want %d and %q:\n%s", c.name, code, c.code, c.want, out)
		}
	}
}

// readmeBlock returns the first ```yaml block after heading in README.md.
func readmeBlock(t *testing.T, heading string) string {
	t.Helper()
	data, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	i := strings.Index(s, heading)
	if i < 0 {
		t.Fatalf("README.md has no %q", heading)
	}
	s = s[i:]
	i = strings.Index(s, "```yaml\n")
	if i < 0 {
		t.Fatalf("no yaml block after %q", heading)
	}
	s = s[i+len("```yaml\n"):]
	return s[:strings.Index(s, "```")]
}

// TestREADMEExamplesValidate: the README's annotated example, shipped as
// examples/sluice.yaml with its files, validates; without its users file
// the error names the config's line of users:. The systemd excerpt
// validates with its folders moved into a temporary one.
func TestREADMEExamplesValidate(t *testing.T) {
	dir := copyExamples(t)
	path := filepath.Join(dir, "examples", "sluice.yaml")
	out, code := runCLI(t, dir, "config", "validate", "--config", path)
	if code != 0 || !strings.Contains(out, ": ok: 7 rules") {
		t.Errorf("annotated example: exit %d:\n%s", code, out)
	}
	example := readmeBlock(t, "### An annotated example")
	if err := os.Remove(filepath.Join(dir, "examples", "users.htpasswd")); err != nil {
		t.Fatal(err)
	}
	out, code = runCLI(t, dir, "config", "validate", "--config", path)
	usersLine := 1 + strings.Count(example[:strings.Index(example, "\nusers:")+1], "\n")
	if code != 2 || !strings.Contains(out, fmt.Sprintf("%s:%d: users: ", path, usersLine)) {
		t.Errorf("annotated example without its users file: exit %d, want 2 naming %s:%d:\n%s", code, path, usersLine, out)
	}

	excerpt := readmeBlock(t, "### systemd")
	tmp := t.TempDir()
	excerpt = strings.ReplaceAll(excerpt, "/var/lib/sluice", tmp)
	excerpt = strings.ReplaceAll(excerpt, "/var/cache/sluice", filepath.Join(tmp, "cache"))
	dir, path = writeConfig(t, excerpt, nil)
	writeFiles(t, tmp, map[string]string{"users.htpasswd": "# no users yet\n"})
	if out, code := runCLI(t, dir, "config", "validate", "--config", path); code != 0 {
		t.Errorf("systemd excerpt: exit %d:\n%s", code, out)
	}
}
