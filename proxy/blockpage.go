package proxy

import (
	"bytes"
	"cmp"
	"fmt"
	"html/template"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/sluiceproxy/sluice/filter"
)

// BlockPage configures what a blocked client is shown. The zero BlockPage
// is the built-in page, without a contact line and without the rule's
// patterns.
type BlockPage struct {
	// Template replaces the built-in page; it is executed with a
	// *BlockPageData. If nil, the built-in page is used. Check it with
	// CheckBlockTemplate before serving: a template that fails on a request
	// falls back to the built-in page (still a 403).
	Template *template.Template
	// Contact is whom the page tells the client to ask
	// ("helpdesk@school.example"). Empty: "the administrator of this network".
	Contact string
	// ShowRule fills BlockPageData's RuleText, Pattern and Where: the whole
	// deciding rule, for personal use. Default false: clients see the rule's
	// name or number (filter.RuleRef.Label) and nothing of its patterns,
	// client subnets or config line.
	ShowRule bool
	// Version is shown on the page (BlockPageData.Version) when not
	// empty; set it only with block_page.show_version. No other answer
	// of Sluice names its version.
	Version string
}

// BlockPageData is what the block page (built-in or a template) shows.
// Every field is text for people, escaped by html/template.
type BlockPageData struct {
	// Name is the proxy's name (Server.Name): "sluice".
	Name string
	// Host is the blocked destination host, normalized; Port its port.
	Host string
	Port uint16
	// Category is the category whose entry matched ("social",
	// "builtin:doh"), or "".
	Category string
	// Rule names the deciding rule: its name, else "rule 3"; "default" when
	// the configured default blocked.
	Rule string
	// Reason is a fixed phrase: "blocked by rule", "no rule matched".
	Reason string
	// Time is when the request arrived, in the proxy's local time.
	Time time.Time
	// Client is the client's IP address; User the authenticated user, or "".
	Client string
	User   string
	// ID is the request id; the access line of the request has it as "id".
	ID string
	// Contact is block_page.contact, or "".
	Contact string
	// RuleText, Pattern and Where are filled only with show_rule: the rule
	// as written ("block: [...], clients: [...]"), the pattern that matched,
	// and the rule's place in the config ("sluice.yaml:12").
	RuleText string
	Pattern  string
	Where    string
	// Version is Sluice's version, only with show_version; else "".
	Version string
}

// builtinPage is the default block page: self-contained (no external
// asset, no script), readable on a phone, every value escaped.
var builtinPage = template.Must(template.New("block").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>Blocked: {{.Host}}</title>
<style>
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;padding:1em;color:#222;background:#f3f4f6;line-height:1.45}
main{max-width:36em;margin:2em auto;background:#fff;border-radius:10px;padding:1.5em;box-shadow:0 1px 4px rgba(0,0,0,.15)}
h1{font-size:1.4em;margin:0 0 .6em}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.35em 1em;margin:1.2em 0}
dt{font-weight:600;color:#555}
dd{margin:0;overflow-wrap:anywhere}
code{font-size:1.05em;overflow-wrap:anywhere}
.id{font-weight:600}
</style></head><body><main>
<h1>This site is blocked</h1>
<p><strong>{{.Host}}</strong> is blocked by {{.Name}}{{if .Category}} because it is in the category <strong>{{.Category}}</strong>{{end}}.</p>
<dl>
<dt>Site</dt><dd>{{.Host}}</dd>
{{- if .Category}}
<dt>Category</dt><dd>{{.Category}}</dd>
{{- end}}
<dt>Rule</dt><dd>{{.Rule}}</dd>
<dt>Time</dt><dd>{{.Time.Format "2006-01-02 15:04:05 MST"}}</dd>
<dt>Your address</dt><dd>{{.Client}}</dd>
{{- if .User}}
<dt>User</dt><dd>{{.User}}</dd>
{{- end}}
<dt>Request id</dt><dd><code class="id">{{.ID}}</code></dd>
{{- if .RuleText}}
<dt>Rule in full</dt><dd><code>{{.Where}}: {{.RuleText}}</code></dd>
{{- end}}
{{- if .Pattern}}
<dt>Matched</dt><dd><code>{{.Pattern}}</code></dd>
{{- end}}
</dl>
<p>If you think this is a mistake, contact {{if .Contact}}<strong>{{.Contact}}</strong>{{else}}the administrator of this network{{end}} and give the request id <code class="id">{{.ID}}</code>.</p>
{{- if .Version}}
<p><small>{{.Name}} {{.Version}}</small></p>
{{- end}}
</main></body></html>
`))

// CheckBlockTemplate executes t once on sample data, so that a template
// that names a field BlockPageData lacks, or that html/template cannot
// escape, is refused when the config loads rather than on a request.
func CheckBlockTemplate(t *template.Template) error {
	sample := &BlockPageData{Name: DefaultName, Host: "blocked.example", Port: 443, Category: "social", Rule: "rule 1",
		Reason: filter.ReasonBlocked, Time: time.Unix(0, 0), Client: "192.0.2.1", User: "user", ID: "abcd-1",
		Contact: "helpdesk@example.org", RuleText: "block: [blocked.example]", Pattern: "blocked.example", Where: "sluice.yaml:1"}
	return t.Execute(io.Discard, sample)
}

// pageData collects what the block page of x shows.
func (s *Server) pageData(x *exchange, t target, d filter.Decision) *BlockPageData {
	pd := &BlockPageData{
		Name: s.name(), Host: t.host, Port: t.port, Category: d.Category, Rule: d.Rule.Label(), Reason: d.Reason,
		Time: x.at, User: x.user, ID: x.id, Contact: s.BlockPage.Contact, Version: s.BlockPage.Version,
	}
	if x.client.IsValid() {
		pd.Client = x.client.String()
	}
	if s.BlockPage.ShowRule && d.Rule.Index > 0 {
		pd.RuleText, pd.Pattern = d.Rule.Text, d.Rule.Pattern
		file := d.Rule.File[strings.LastIndexByte(d.Rule.File, '/')+1:] // no server paths
		pd.Where = cmp.Or(file, "config") + ":" + strconv.Itoa(d.Rule.Line)
	}
	return pd
}

// refusePlain answers a blocked plain request: 403, X-Sluice-Block and the
// block page (the configured template, else the built-in page).
func (s *Server) refusePlain(w http.ResponseWriter, x *exchange, t target, d filter.Decision) {
	body, err := s.BlockPage.render(w.Header(), s.pageData(x, t, d), d)
	if err != nil {
		x.err = err
	}
	w.WriteHeader(http.StatusForbidden)
	w.Write(body)
}

// render executes the block page for pd (the template, else the built-in
// page) and sets its headers in h. A template that fails falls back to
// the built-in page, and its error is returned with the page.
func (bp BlockPage) render(h http.Header, pd *BlockPageData, d filter.Decision) ([]byte, error) {
	var b bytes.Buffer
	var err error
	builtin := true
	if tp := bp.Template; tp != nil {
		if terr := tp.Execute(&b, pd); terr != nil {
			err = fmt.Errorf("proxy: block page template: %w", terr)
			b.Reset()
		} else {
			builtin = false
		}
	}
	if builtin {
		builtinPage.Execute(&b, pd)
		// The built-in page needs nothing from outside; say so, so that
		// nothing on it could ever load or run.
		h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
	}
	h.Set(HeaderBlock, blockHeader(d))
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Length", strconv.Itoa(b.Len()))
	return b.Bytes(), err
}

// Response returns a whole HTTP/1.1 403 response carrying the block page
// for pd (see BlockPageData; Name "" means DefaultName), with
// "Connection: close", for a front end without an http.ResponseWriter:
// the transparent listener answers a blocked plain HTTP request with it.
// A template that fails falls back to the built-in page; its error is
// returned with the response.
func (bp BlockPage) Response(pd *BlockPageData, d filter.Decision) ([]byte, error) {
	if pd.Name == "" {
		pd.Name = DefaultName
	}
	pd.Contact = bp.Contact
	if !bp.ShowRule {
		pd.RuleText, pd.Pattern, pd.Where = "", "", ""
	} else if d.Rule.Index > 0 && pd.Where == "" {
		pd.RuleText, pd.Pattern = d.Rule.Text, d.Rule.Pattern
		file := d.Rule.File[strings.LastIndexByte(d.Rule.File, '/')+1:]
		pd.Where = cmp.Or(file, "config") + ":" + strconv.Itoa(d.Rule.Line)
	}
	if pd.Rule == "" {
		pd.Rule = d.Rule.Label()
	}
	h := http.Header{}
	body, err := bp.render(h, pd, d)
	h.Set("Connection", "close")
	var b bytes.Buffer
	b.WriteString("HTTP/1.1 403 Forbidden\r\n")
	h.Write(&b)
	b.WriteString("\r\n")
	b.Write(body)
	return b.Bytes(), err
}

// refuseConnect answers a blocked CONNECT: 403, X-Sluice-Block and a short
// text with the rule's label and the request id, never its patterns.
// (Browsers show no body of a refused CONNECT; other clients print it.)
func (s *Server) refuseConnect(w http.ResponseWriter, x *exchange, t target, d filter.Decision) {
	w.Header().Set(HeaderBlock, blockHeader(d))
	textError(w, http.StatusForbidden, "sluice: "+t.addr()+" is blocked by "+blockHeader(d)+" (request id "+x.id+")")
}

// blockHeader renders the rule's label (filter.RuleRef.Label) for a header
// on one line: bytes that are not printable ASCII, and '%', are
// percent-encoded, so that a name in any script arrives intact.
func blockHeader(d filter.Decision) string {
	label := d.Rule.Label()
	var b strings.Builder
	for i := 0; i < len(label); i++ {
		c := label[i]
		if c < ' ' || c >= 0x7f || c == '%' {
			fmt.Fprintf(&b, "%%%02X", c)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}
