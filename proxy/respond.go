package proxy

import (
	"bytes"
	"errors"
	"html/template"
	"net/http"
	"strconv"
	"strings"

	"github.com/sluiceproxy/sluice/filter"
	"github.com/sluiceproxy/sluice/proxy/dial"
)

// Header names Sluice sets on its own answers.
const (
	// HeaderBlock names the rule that blocked a request ("rule 3 (sluice.yaml:12)").
	HeaderBlock = "X-Sluice-Block"
	// authChallenge is the exact challenge browsers prompt for (issue 4).
	authChallenge = `Basic realm="sluice"`
)

// textError writes a short text/plain answer that closes nothing.
func textError(w http.ResponseWriter, code int, msg string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Length", strconv.Itoa(len(msg)+1))
	w.WriteHeader(code)
	w.Write([]byte(msg + "\n"))
}

// requireAuth answers 407 with the Basic challenge.
func requireAuth(w http.ResponseWriter) {
	w.Header().Set("Proxy-Authenticate", authChallenge)
	textError(w, http.StatusProxyAuthRequired, "sluice: proxy authentication required")
}

// blockHeader renders the rule for the X-Sluice-Block header, on one line.
func blockHeader(d filter.Decision) string {
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, d.Rule.String())
}

// refuseConnect answers a blocked CONNECT: 403, the header, a short text.
func (s *Server) refuseConnect(w http.ResponseWriter, t target, d filter.Decision) {
	w.Header().Set(HeaderBlock, blockHeader(d))
	textError(w, http.StatusForbidden, "sluice: "+t.addr()+" is blocked ("+blockHeader(d)+")")
}

var blockPage = template.Must(template.New("block").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Blocked by {{.Name}}</title>
<style>body{font-family:sans-serif;max-width:40em;margin:3em auto;color:#222}dt{font-weight:bold}</style>
</head><body>
<h1>Access blocked</h1>
<p>{{.Name}} does not allow access to <strong>{{.Host}}</strong>.</p>
<dl>
<dt>Host</dt><dd>{{.Host}}</dd>
<dt>Rule</dt><dd>{{.Rule}}{{if .Text}}: <code>{{.Text}}</code>{{end}}</dd>
{{if .Category}}<dt>Category</dt><dd>{{.Category}}</dd>{{end}}
<dt>Reason</dt><dd>{{.Reason}}</dd>
</dl>
<p>If you think this is a mistake, contact the administrator of {{.Name}}.</p>
</body></html>
`))

// refusePlain answers a blocked plain request: 403, the header and the
// HTML block page, every value escaped.
func (s *Server) refusePlain(w http.ResponseWriter, t target, d filter.Decision) {
	var b bytes.Buffer
	blockPage.Execute(&b, map[string]string{
		"Name":     s.name(),
		"Host":     t.host,
		"Rule":     d.Rule.String(),
		"Text":     d.Rule.Text,
		"Category": d.Category,
		"Reason":   d.Reason,
	})
	h := w.Header()
	h.Set(HeaderBlock, blockHeader(d))
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Length", strconv.Itoa(b.Len()))
	w.WriteHeader(http.StatusForbidden)
	w.Write(b.Bytes())
}

// dialFailure maps a failure to reach addr to a status and a short text
// that never contains a password (dial.Error promises that) nor raw
// internals: 504 on timeout, 403 when an upstream's own policy refused the
// target (with what it answered), 502 otherwise.
func dialFailure(addr string, err error) (int, string) {
	kind := dial.Classify(err)
	if kind == dial.KindUpstreamRefused {
		msg := "sluice: upstream refused " + addr
		if de, ok := asDialError(err); ok {
			msg = "sluice: upstream " + de.Upstream + " refused " + addr
			if inner := innermost(de); inner != nil {
				msg += ": " + printable(inner.Error())
			}
		}
		return http.StatusForbidden, msg
	}
	var what string
	switch kind {
	case dial.KindTimeout:
		what = "timed out"
	case dial.KindDNS:
		what = "name does not resolve"
	case dial.KindRefused:
		what = "connection refused"
	case dial.KindHostUnreachable:
		what = "host unreachable"
	case dial.KindNetUnreachable:
		what = "network unreachable"
	default:
		what = kind.String()
		if kind == dial.KindOther {
			what = "connection failed"
		}
	}
	msg := "sluice: cannot reach " + addr
	if de, ok := asDialError(err); ok && de.Upstream != "" {
		msg += " via upstream " + de.Upstream
	}
	msg += ": " + what
	if kind == dial.KindTimeout {
		return http.StatusGatewayTimeout, msg
	}
	return http.StatusBadGateway, msg
}

// innermost is the end of err's chain: what the upstream said.
func innermost(err error) error {
	for {
		next := errors.Unwrap(err)
		if next == nil {
			return err
		}
		err = next
	}
}

// printable keeps printable ASCII (an upstream's status text is not ours
// to trust) and replaces the rest with '?'.
func printable(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c < ' ' || c > '~' {
			b[i] = '?'
		}
	}
	return string(b)
}

func asDialError(err error) (*dial.Error, bool) {
	var de *dial.Error
	ok := errors.As(err, &de)
	return de, ok
}
