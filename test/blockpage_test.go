package test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
)

// acceptCounter is a listener on loopback that counts TCP accepts and
// closes each connection at once: proof that something was, or was not,
// dialed.
type acceptCounter struct {
	ln      net.Listener
	port    string
	accepts atomic.Int64
}

func newAcceptCounter(t *testing.T) *acceptCounter {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := &acceptCounter{ln: ln}
	_, a.port, _ = net.SplitHostPort(ln.Addr().String())
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			a.accepts.Add(1)
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return a
}

// accessLine returns the one access line whose target is target, decoded,
// waiting for it to be written.
func accessLine(t *testing.T, p *proc, target string) map[string]any {
	t.Helper()
	p.waitLog(t, `"msg":"access".*"target":"`+regexp.QuoteMeta(target)+`"`)
	var found []map[string]any
	for _, l := range strings.Split(p.Log(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == "access" && m["target"] == target {
			found = append(found, m)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d access lines for %s, want 1:\n%s", len(found), target, p.Log())
	}
	return found[0]
}

const blockPageConfig = `
hosts: {social.test: 127.0.0.1, ads.test: 127.0.0.1, open.test: 127.0.0.1}
categories:
  social: [lists/social.txt]
block_page:
  contact: "helpdesk@school.example"
rules:
  - name: Social media
    block: ["category:social", "secret-pattern.test"]
    clients: ["127.0.0.0/24"]
  - block: [ads.test]
`

// TestBlockPageSaysWhy drives the binary with curl: the page of a named
// rule shows host, category, name, time, client, contact and the request
// id of the access line, and none of the rule's patterns, client subnet or
// config line; an unnamed rule is "rule 2"; a refused CONNECT says the
// same in one line.
func TestBlockPageSaysWhy(t *testing.T) {
	o := newOrigin(t, false)
	p := startSluice(t, blockPageConfig, map[string]string{"lists/social.txt": "social.test\nother-social.test\n"})
	proxyURL := "http://" + p.addr

	out, code := curl(t, "-i", "-x", proxyURL, "http://social.test:"+o.port+"/feed")
	if code != 0 || !strings.HasPrefix(out, "HTTP/1.1 403") {
		t.Fatalf("want 403, exit %d:\n%s", code, out)
	}
	line := accessLine(t, p, "social.test:"+o.port)
	id, _ := line["request_id"].(string)
	if id == "" || line["verdict"] != "block" || !strings.Contains(line["rule"].(string), `"Social media" (sluice.yaml:9)`) {
		t.Fatalf("access line: %v", line)
	}
	for _, want := range []string{
		"X-Sluice-Block: Social media\r\n", "social.test", "social", "Social media", "127.0.0.1", "helpdesk@school.example",
		id, `name="viewport"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("block page lacks %q:\n%s", want, out)
		}
	}
	for _, leak := range []string{"other-social.test", "secret-pattern", "category:social", "127.0.0.0/24", "sluice.yaml", "lists/"} {
		if strings.Contains(out, leak) {
			t.Errorf("block page shows %q:\n%s", leak, out)
		}
	}

	out, _ = curl(t, "-i", "-x", proxyURL, "http://ads.test:"+o.port+"/")
	if !strings.Contains(out, "X-Sluice-Block: rule 2\r\n") || !strings.Contains(out, "<dd>rule 2</dd>") || strings.Contains(out, "ads.test]") {
		t.Errorf("unnamed rule:\n%s", out)
	}

	// CONNECT: the 403 text names the rule and the id, nothing more.
	c, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "CONNECT social.test:443 HTTP/1.1\r\nHost: social.test:443\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body := make([]byte, 512)
	n, _ := resp.Body.Read(body)
	cid, _ := accessLine(t, p, "social.test:443")["request_id"].(string)
	if want := "sluice: social.test:443 is blocked by Social media (request id " + cid + ")\n"; resp.StatusCode != 403 || string(body[:n]) != want {
		t.Errorf("CONNECT: %d %q, want %q", resp.StatusCode, body[:n], want)
	}
	if cid == id {
		t.Errorf("two requests share the id %s", id)
	}
	if o.hits.Load() != 0 {
		t.Errorf("blocked requests reached the origin %d times", o.hits.Load())
	}
}

// TestBlockPageTemplateAndShowRule: block_page.template replaces the page
// (fields documented in the README), show_rule puts the rule back, and a
// template that does not parse, or names a field that does not exist,
// stops serve and config validate with the file's name.
func TestBlockPageTemplateAndShowRule(t *testing.T) {
	o := newOrigin(t, false)
	page := `<!DOCTYPE html><title>{{.Name}}</title>
<p id=custom>{{.Host}}:{{.Port}} | {{.Category}} | {{.Rule}} | {{.Reason}} | {{.Client}} | {{.User}} | {{.ID}} | {{.Contact}} | {{.Time.Year}}</p>
{{if .RuleText}}<pre>{{.Where}} {{.RuleText}} {{.Pattern}}</pre>{{end}}
`
	cfg := blockPageConfig
	cfg = strings.Replace(cfg, "block_page:\n", "block_page:\n  template: page.html\n", 1)
	p := startSluice(t, cfg, map[string]string{"lists/social.txt": "social.test\n", "page.html": page})
	out, _ := curl(t, "-i", "-x", "http://"+p.addr, "http://social.test:"+o.port+"/")
	id, _ := accessLine(t, p, "social.test:"+o.port)["request_id"].(string)
	want := "<p id=custom>social.test:" + o.port + " | social | Social media | blocked by rule | 127.0.0.1 |  | " + id + " | helpdesk@school.example | "
	if !strings.HasPrefix(out, "HTTP/1.1 403") || !strings.Contains(out, want) || strings.Contains(out, "<pre>") {
		t.Errorf("template page lacks %q (or shows the rule):\n%s", want, out)
	}

	// show_rule: the whole rule, escaped, with the config's name and line.
	cfg = strings.Replace(cfg, "block_page:\n", "block_page:\n  show_rule: true\n", 1)
	p = startSluice(t, cfg, map[string]string{"lists/social.txt": "social.test\n", "page.html": page})
	out, _ = curl(t, "-i", "-x", "http://"+p.addr, "http://social.test:"+o.port+"/")
	if !strings.Contains(out, "<pre>sluice.yaml:11 block: [category:social, secret-pattern.test], clients: [127.0.0.0/24] category:social</pre>") {
		t.Errorf("show_rule page:\n%s", out)
	}

	// Broken templates are refused at load, naming the file.
	for name, tmpl := range map[string]string{
		"syntax":        "<p>\n{{.Host</p>\n",
		"unknown field": "<p>{{.Hots}}</p>\n",
	} {
		dir := t.TempDir()
		writeFiles(t, dir, map[string]string{"lists/social.txt": "social.test\n", "page.html": tmpl, "sluice.yaml": "listen: [\"127.0.0.1:0\"]\n" + cfg})
		out, code := runCLI(t, dir, "config", "validate", "--config", filepath.Join(dir, "sluice.yaml"))
		if code != 2 || !strings.Contains(out, filepath.Join(dir, "page.html")) {
			t.Errorf("%s: config validate: exit %d:\n%s", name, code, out)
		}
		if name == "syntax" && !strings.Contains(out, "sluice.yaml:8: block_page: template: ") || !strings.Contains(out, "page.html:") {
			t.Errorf("%s: error lacks the config line or the template's line:\n%s", name, out)
		}
		out, code = runCLI(t, dir, "serve", "--config", filepath.Join(dir, "sluice.yaml"))
		if code == 0 || !strings.Contains(out, "page.html") {
			t.Errorf("%s: serve: exit %d:\n%s", name, code, out)
		}
	}
	if _, err := os.Stat(filepath.Join(p.dir, "page.html")); err != nil {
		t.Fatal(err)
	}
}

// TestBlockPageTemplateReload: an edit of the template file reloads the
// config; a template that no longer parses is refused by the reload and
// the running page keeps serving.
func TestBlockPageTemplateReload(t *testing.T) {
	o := newOrigin(t, false)
	cfg := strings.Replace(blockPageConfig, "block_page:\n", "block_page:\n  template: page.html\n", 1)
	p := startSluice(t, cfg, map[string]string{"lists/social.txt": "social.test\n", "page.html": "<p>first {{.Host}}</p>\n"})
	page := func() string {
		out, _ := curl(t, "-x", "http://"+p.addr, "http://social.test:"+o.port+"/")
		return out
	}
	if got := page(); got != "<p>first social.test</p>\n" {
		t.Fatalf("first page: %q", got)
	}
	file := filepath.Join(p.dir, "page.html")
	os.WriteFile(file, []byte("<p>second {{.Host}} {{.Rule}}</p>\n"), 0o644)
	eventually(t, "the edited template is served", func() bool { return page() == "<p>second social.test Social media</p>\n" })

	os.WriteFile(file, []byte("<p>third {{.Nope}}</p>\n"), 0o644)
	p.waitLog(t, `reload failed; keeping the running rules.*page.html.*Nope`)
	if got := page(); got != "<p>second social.test Social media</p>\n" {
		t.Fatalf("after a failed reload: %q, want the running template's page", got)
	}
}
