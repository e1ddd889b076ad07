package server

import (
	"bytes"
	"cmp"
	"fmt"
	"html/template"
	"maps"
	"net/http"
	"slices"
	"time"

	"github.com/sluiceproxy/sluice/rules"
)

// The admin listener's status page (`/`): one server-rendered HTML page,
// no external assets and no JavaScript, that reloads itself every
// statusRefresh seconds (meta refresh).

// statusRefresh is how often the page reloads itself, in seconds.
const statusRefresh = 10

// sourceProblem is a list source that could not be read, or that had
// invalid lines, in the running rules.
type sourceProblem struct {
	Category string
	Source   string // path or URL
	Problem  string
}

// sourceProblems lists the sources of set that could not be read or had
// invalid lines.
func sourceProblems(set *rules.Set) []sourceProblem {
	var out []sourceProblem
	for _, name := range slices.Sorted(maps.Keys(set.Categories)) {
		for _, src := range set.Categories[name].Sources {
			where := cmp.Or(src.Source.Path, src.Source.URL)
			if src.Err != nil {
				msg := src.Err.Error()
				if src.LastGood != "" {
					msg += "; serving its last good copy"
				}
				out = append(out, sourceProblem{Category: name, Source: where, Problem: msg})
			}
			if src.Invalid > 0 {
				msg := fmt.Sprintf("invalid lines skipped: %d", src.Invalid)
				if len(src.Errors) > 0 {
					msg += "; first: " + src.Errors[0].Error()
				}
				out = append(out, sourceProblem{Category: name, Source: where, Problem: msg})
			}
		}
	}
	return out
}

// statusPage is what the template renders.
type statusPage struct {
	Refresh    int
	Version    string
	Now        time.Time
	Started    time.Time
	Uptime     time.Duration
	Conns      int
	Rules      int
	Loaded     time.Time
	Reload     *reloadResult // nil: no reload yet
	Reloads    int64
	Failures   int64
	Chart      chart
	Requests   int64 // last hour
	Blocks     int64 // last hour
	Categories []topCount
	Hosts      []topCount
	Upstreams  []upstreamHealth
	Problems   []sourceProblem
	Exceptions []rules.Exception // the temporary exceptions in force
}

type upstreamHealth struct {
	Route string
	Up    bool
}

// chart is the geometry of the per-minute SVG bar chart: a plot area of
// 60 bars with a value axis on the left and a time axis below.
type chart struct {
	Width, Height int // of the whole SVG
	Left, Top     int // the plot area's corner
	PlotW, PlotH  int
	Max           int64 // the value at the top of the plot
	Half          int64
	HalfY, Bottom int // y of the half line and of the base line
	Bars          []bar
}

type bar struct {
	X, W       int
	ReqY, ReqH int
	BlkY, BlkH int
	Minute     string // "-59m" .. "now"
	Req, Blk   int64
}

const (
	chartLeft   = 44
	chartTop    = 8
	chartPlotW  = 720
	chartPlotH  = 180
	chartBottom = 22
)

func newChart(req, blk [ringMinutes]int64) chart {
	c := chart{Width: chartLeft + chartPlotW + 8, Height: chartTop + chartPlotH + chartBottom,
		Left: chartLeft, Top: chartTop, PlotW: chartPlotW, PlotH: chartPlotH, Max: 1}
	for _, n := range req {
		c.Max = max(c.Max, n)
	}
	if c.Max > 1 && c.Max%2 == 1 {
		c.Max++ // a half line at a whole number
	}
	c.Half = c.Max / 2
	c.Bottom = chartTop + chartPlotH
	c.HalfY = c.Bottom - int(c.Half*chartPlotH/c.Max)
	w := chartPlotW / ringMinutes
	scale := func(n int64) int { return int(n * chartPlotH / c.Max) }
	for i := range ringMinutes {
		rh, bh := scale(req[i]), scale(blk[i])
		label := "now"
		if ago := ringMinutes - 1 - i; ago > 0 {
			label = fmt.Sprintf("-%dm", ago)
		}
		c.Bars = append(c.Bars, bar{X: chartLeft + i*w, W: w - 1, ReqY: c.Bottom - rh, ReqH: rh, BlkY: c.Bottom - bh, BlkH: bh,
			Minute: label, Req: req[i], Blk: blk[i]})
	}
	return c
}

// status serves the status page.
func (a *adminServer) status(w http.ResponseWriter, _ *http.Request) {
	s, m := a.s, a.s.m
	st := s.state.Load()
	now := m.now()
	req, blk := m.perMinute.series()
	p := statusPage{
		Refresh:    statusRefresh,
		Version:    cmp.Or(s.opts.Version, "dev"),
		Now:        now,
		Started:    m.started,
		Uptime:     now.Sub(m.started).Round(time.Second),
		Conns:      s.conns.len(),
		Rules:      st.engine.Rules(),
		Loaded:     st.loaded,
		Reload:     m.lastReload.Load(),
		Reloads:    s.reloads.Load(),
		Failures:   s.failures.Load(),
		Chart:      newChart(req, blk),
		Categories: m.blockedCats.top(10),
		Hosts:      m.blockedHosts.top(10),
		Problems:   st.problems,
	}
	live, _ := s.exc.Load().Live(now)
	p.Exceptions = live.List()
	for i := range req {
		p.Requests += req[i]
		p.Blocks += blk[i]
	}
	for _, route := range slices.Sorted(maps.Keys(st.cfg.Upstreams)) {
		p.Upstreams = append(p.Upstreams, upstreamHealth{Route: route, Up: st.router.Up(route)})
	}
	var buf bytes.Buffer
	if err := statusTemplate.Execute(&buf, p); err != nil {
		s.log.Error("status page", "err", err)
		http.Error(w, "status page: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
	w.Write(buf.Bytes())
}

var statusTemplate = template.Must(template.New("status").Funcs(template.FuncMap{
	"ts":  func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") },
	"add": func(a, b int) int { return a + b },
	"sub": func(a, b int) int { return a - b },
	"div": func(a, b int) int { return a / b },
}).Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="refresh" content="{{.Refresh}}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sluice status</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; background: #fafafa; }
h1 { font-size: 1.4em; margin: 0 0 .2em; }
h2 { font-size: 1.1em; margin: 1.4em 0 .4em; }
.facts { display: flex; flex-wrap: wrap; gap: .6em; }
.fact { background: #fff; border: 1px solid #ddd; border-radius: 4px; padding: .4em .8em; }
.fact b { display: block; font-size: 1.3em; }
table { border-collapse: collapse; background: #fff; }
td, th { border: 1px solid #ddd; padding: .25em .6em; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.up { color: #16702e; } .down { color: #b00020; font-weight: bold; }
.err { color: #b00020; }
svg { background: #fff; border: 1px solid #ddd; max-width: 100%; height: auto; }
.req { fill: #8fb3d9; } .blk { fill: #d9534f; }
.axis line { stroke: #e3e3e3; } .axis text { font-size: 11px; fill: #777; text-anchor: end; }
.axis text.start { text-anchor: start; } .axis text.mid { text-anchor: middle; }
.legend span { display: inline-block; width: .8em; height: .8em; margin: 0 .3em 0 1em; vertical-align: middle; }
.muted { color: #777; }
</style>
</head>
<body>
<h1>Sluice status</h1>
<p class="muted">version {{.Version}} · {{ts .Now}} · this page reloads every {{.Refresh}} s</p>
<div class="facts">
<div class="fact">uptime<b id="uptime">{{.Uptime}}</b></div>
<div class="fact">connections now<b id="conns">{{.Conns}}</b></div>
<div class="fact">requests, last hour<b id="requests">{{.Requests}}</b></div>
<div class="fact">blocked, last hour<b id="blocks">{{.Blocks}}</b></div>
<div class="fact">rules<b>{{.Rules}}</b></div>
</div>

<h2>Requests and blocks per minute, last hour</h2>
<svg id="chart" xmlns="http://www.w3.org/2000/svg" width="{{.Chart.Width}}" height="{{.Chart.Height}}" viewBox="0 0 {{.Chart.Width}} {{.Chart.Height}}" role="img" aria-label="requests and blocks per minute over the last hour">
{{- with .Chart}}
<g class="axis">
<line x1="{{.Left}}" y1="{{.Top}}" x2="{{add .Left .PlotW}}" y2="{{.Top}}"/><text x="{{sub .Left 6}}" y="{{add .Top 4}}">{{.Max}}</text>
<line x1="{{.Left}}" y1="{{.HalfY}}" x2="{{add .Left .PlotW}}" y2="{{.HalfY}}"/><text x="{{sub .Left 6}}" y="{{add .HalfY 4}}">{{.Half}}</text>
<line x1="{{.Left}}" y1="{{.Bottom}}" x2="{{add .Left .PlotW}}" y2="{{.Bottom}}"/><text x="{{sub .Left 6}}" y="{{add .Bottom 4}}">0</text>
<text x="{{.Left}}" y="{{add .Bottom 16}}" class="start">60 min ago</text>
<text x="{{add .Left (div .PlotW 2)}}" y="{{add .Bottom 16}}" class="mid">30 min ago</text>
<text x="{{add .Left .PlotW}}" y="{{add .Bottom 16}}">now</text>
</g>
{{- range .Bars}}
<g><title>{{.Minute}}: {{.Req}} requests, {{.Blk}} blocked</title><rect class="req" x="{{.X}}" y="{{.ReqY}}" width="{{.W}}" height="{{.ReqH}}"/><rect class="blk" x="{{.X}}" y="{{.BlkY}}" width="{{.W}}" height="{{.BlkH}}"/></g>
{{- end}}
{{- end}}
</svg>
<p class="legend muted"><span class="req" style="background:#8fb3d9"></span>requests<span style="background:#d9534f"></span>blocked · one bar a minute; hover a bar for its numbers</p>

<h2>Most blocked categories, last hour</h2>
{{if .Categories}}<table id="categories"><tr><th>category</th><th>blocks</th></tr>
{{range .Categories}}<tr><td>{{if .Key}}{{.Key}}{{else}}<span class="muted">(no category)</span>{{end}}</td><td class="n">{{.Count}}{{if .Err}} <span class="muted">(±{{.Err}})</span>{{end}}</td></tr>
{{end}}</table>{{else}}<p class="muted">Nothing blocked in the last hour.</p>{{end}}

<h2>Most blocked hosts, last hour</h2>
{{if .Hosts}}<table id="hosts"><tr><th>host</th><th>blocks</th></tr>
{{range .Hosts}}<tr><td>{{.Key}}</td><td class="n">{{.Count}}{{if .Err}} <span class="muted">(±{{.Err}})</span>{{end}}</td></tr>
{{end}}</table>{{else}}<p class="muted">Nothing blocked in the last hour.</p>{{end}}

<h2>Upstreams</h2>
{{if .Upstreams}}<table id="upstreams"><tr><th>route</th><th>health</th></tr>
{{range .Upstreams}}<tr><td>{{.Route}}</td><td>{{if .Up}}<span class="up">up</span>{{else}}<span class="down">down</span>{{end}}</td></tr>
{{end}}</table>{{else}}<p class="muted">No upstreams: every connection is direct.</p>{{end}}

<h2>Rules and reloads</h2>
<p id="reload">Rules loaded {{ts .Loaded}}. {{.Reloads}} reloads, {{.Failures}} failed.
{{with .Reload}}Last reload {{ts .At}}: {{if .Err}}<span class="err">failed: {{.Err}}</span> (the previous rules keep serving){{else}}<span class="up">succeeded</span>{{end}}.{{else}}No reload since the start ({{ts $.Started}}).{{end}}</p>

<h2>Temporary exceptions</h2>
{{if .Exceptions}}<table id="exceptions"><tr><th>domain</th><th>until</th><th>client</th><th>user</th></tr>
{{range .Exceptions}}<tr><td>{{.Domain}}</td><td>{{ts .Until}}</td><td>{{if .Client.IsValid}}{{.Client}}{{else}}any{{end}}</td><td>{{or .User "any"}}</td></tr>
{{end}}</table>{{else}}<p class="muted">None (sluice allow adds them).</p>{{end}}

<h2>List sources with errors</h2>
{{if .Problems}}<table id="problems"><tr><th>category</th><th>source</th><th>problem</th></tr>
{{range .Problems}}<tr><td>{{.Category}}</td><td>{{.Source}}</td><td class="err">{{.Problem}}</td></tr>
{{end}}</table>{{else}}<p class="muted">None: every list source was read.</p>{{end}}
</body>
</html>
`))
