package proxy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"html/template"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice/filter"
)

// namedDecision blocks by a named rule whose name, patterns and client
// subnet hold markup and look like things a client must not see.
var namedDecision = filter.Decision{
	Verdict: filter.Block,
	Reason:  filter.ReasonBlocked,
	Rule: filter.RuleRef{Index: 4, Name: `<i>Réseaux</i> & "co"`, File: "/etc/sluice/sluice.yaml", Line: 31,
		Text: `block: [.secret-list.example, "<b>x</b>"], clients: [10.9.0.0/16]`, Pattern: ".secret-list.example"},
	Category: "social",
}

// getBlocked fetches http://named.test/ through a proxy configured by edit
// and returns the response, its body and its access line.
func getBlocked(t *testing.T, edit func(*Server)) (*http.Response, string, map[string]any) {
	t.Helper()
	f := newFixture(t, edit)
	f.policy.block["named.test"] = namedDecision
	resp, err := f.client(t, nil).Get("http://named.test:8080/path")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("status %d, want 403", resp.StatusCode)
	}
	var line map[string]any
	if err := json.Unmarshal([]byte(strings.TrimSpace(f.log.String())), &line); err != nil {
		t.Fatalf("log: %v\n%s", err, f.log.String())
	}
	return resp, string(body), line
}

// TestBlockPageDefault: the built-in page names the host, the category,
// the rule's name (escaped), the time, the client and the request id of
// the access line, and nothing of the rule's patterns, subnets or line.
func TestBlockPageDefault(t *testing.T) {
	resp, body, line := getBlocked(t, func(s *Server) { s.BlockPage.Contact = "helpdesk@school.example" })
	id, _ := line["request_id"].(string)
	if id == "" || line["rule"] != `rule 4 "<i>Réseaux</i> & \"co\"" (sluice.yaml:31)` {
		t.Fatalf("access line: %v", line)
	}
	for _, want := range []string{
		"named.test", "social", "&lt;i&gt;Réseaux&lt;/i&gt; &amp; &#34;co&#34;", "127.0.0.1", id, "helpdesk@school.example",
		`<meta name="viewport"`, "Time",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("block page lacks %q:\n%s", want, body)
		}
	}
	for _, leak := range []string{"secret-list", "10.9.0.0", "sluice.yaml", "yaml", "<i>", "<b>", "/etc/"} {
		if strings.Contains(body, leak) {
			t.Errorf("block page shows %q:\n%s", leak, body)
		}
	}
	for _, external := range []string{"http://", "https://", "src=", "<link", "<script"} {
		if strings.Contains(body, external) {
			t.Errorf("block page refers outside itself (%q):\n%s", external, body)
		}
	}
	if got := resp.Header.Get(HeaderBlock); got != "<i>R%C3%A9seaux</i> & \"co\"" {
		t.Errorf("%s = %q", HeaderBlock, got)
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.HasPrefix(csp, "default-src 'none'") {
		t.Errorf("Content-Security-Policy = %q", csp)
	}
}

// TestBlockPageShowRule: with ShowRule the page shows the rule in full,
// escaped, with the config file's name but not its folder.
func TestBlockPageShowRule(t *testing.T) {
	_, body, _ := getBlocked(t, func(s *Server) { s.BlockPage.ShowRule = true })
	for _, want := range []string{"secret-list.example", "10.9.0.0/16", "sluice.yaml:31", "&lt;b&gt;x&lt;/b&gt;"} {
		if !strings.Contains(body, want) {
			t.Errorf("block page with show_rule lacks %q:\n%s", want, body)
		}
	}
	if strings.Contains(body, "/etc/") || strings.Contains(body, "<b>") {
		t.Errorf("block page shows a server path or unescaped markup:\n%s", body)
	}
}

// TestBlockPageTemplate: a template replaces the page, gets every field
// escaped, and gets no rule text without ShowRule; a template that fails
// on a request falls back to the built-in page, still a 403.
func TestBlockPageTemplate(t *testing.T) {
	tp := template.Must(template.New("page.html").Parse(
		`<p class=custom>{{.Host}}|{{.Category}}|{{.Rule}}|{{.ID}}|{{.Client}}|{{.Contact}}|{{.RuleText}}|{{.Pattern}}|{{.Where}}|{{.Port}}</p>`))
	if err := CheckBlockTemplate(tp); err != nil {
		t.Fatal(err)
	}
	resp, body, line := getBlocked(t, func(s *Server) { s.BlockPage = BlockPage{Template: tp, Contact: "desk"} })
	want := `<p class=custom>named.test|social|&lt;i&gt;Réseaux&lt;/i&gt; &amp; &#34;co&#34;|` + line["request_id"].(string) + `|127.0.0.1|desk||||8080</p>`
	if body != want {
		t.Errorf("template page:\n got %s\nwant %s", body, want)
	}
	if resp.Header.Get("Content-Type") != "text/html; charset=utf-8" || resp.Header.Get(HeaderBlock) == "" {
		t.Errorf("headers: %v", resp.Header)
	}

	bad := template.Must(template.New("bad.html").Parse(`{{index .Host 99}}`))
	_, body, line = getBlocked(t, func(s *Server) { s.BlockPage.Template = bad })
	if !strings.Contains(body, "This site is blocked") || !strings.Contains(body, "named.test") {
		t.Errorf("failing template: want the built-in page, got:\n%s", body)
	}
	if e, _ := line["err"].(string); !strings.Contains(e, "block page template") {
		t.Errorf("failing template: access line err = %q", e)
	}
}

func TestCheckBlockTemplate(t *testing.T) {
	for src, ok := range map[string]bool{
		`{{.Host}} {{.Time.Format "15:04"}} {{if .User}}{{.User}}{{end}}`: true,
		`{{.Hots}}`:                          false,
		`<a href="{{.Host}}">x</a>`:          true,
		`<script>var x = {{.Nope}}</script>`: false,
	} {
		err := CheckBlockTemplate(template.Must(template.New("t").Parse(src)))
		if (err == nil) != ok {
			t.Errorf("%s: %v", src, err)
		}
	}
}

// TestBlockedConnectText: the 403 of a refused CONNECT names the rule by
// its label and the request id, never its patterns.
func TestBlockedConnectText(t *testing.T) {
	f := newFixture(t, nil)
	f.policy.block["named.test"] = namedDecision
	c := f.raw(t)
	io.WriteString(c, "CONNECT named.test:443 HTTP/1.1\r\nHost: named.test:443\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	var line map[string]any
	json.Unmarshal([]byte(strings.TrimSpace(f.log.String())), &line)
	want := "sluice: named.test:443 is blocked by <i>R%C3%A9seaux</i> & \"co\" (request id " + line["request_id"].(string) + ")\n"
	if resp.StatusCode != 403 || string(body) != want {
		t.Errorf("CONNECT: %d %q, want %q", resp.StatusCode, body, want)
	}
}

// TestBlockPageResponse reads BlockPage.Response as a client would: one
// complete 403 whose body is the page and whose connection closes.
func TestBlockPageResponse(t *testing.T) {
	d := filter.Decision{Verdict: filter.Block, Reason: filter.ReasonBlocked, Category: "social",
		Rule: filter.RuleRef{Index: 2, Name: "no social", Text: "block: [social.example]", Pattern: "social.example", File: "/etc/sluice/sluice.yaml", Line: 7}}
	for _, showRule := range []bool{false, true} {
		raw, err := BlockPage{Contact: "help@school.example", ShowRule: showRule}.Response(&BlockPageData{Host: "social.example", Port: 80, ID: "id-1", Client: "192.0.2.2", Time: time.Now()}, d)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(raw)), nil)
		if err != nil {
			t.Fatalf("not an HTTP response: %v\n%s", err, raw)
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 403 || !resp.Close || resp.Header.Get(HeaderBlock) != "no social" ||
			!strings.Contains(string(body), "social.example") || !strings.Contains(string(body), "help@school.example") ||
			!strings.Contains(string(body), "id-1") || int64(len(body)) != resp.ContentLength {
			t.Errorf("show_rule %v: status %d close %v headers %v\n%s", showRule, resp.StatusCode, resp.Close, resp.Header, body)
		}
		if got := strings.Contains(string(body), "sluice.yaml:7"); got != showRule {
			t.Errorf("show_rule %v: page shows the rule's place: %v", showRule, got)
		}
	}
}
