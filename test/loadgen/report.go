package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
)

// report holds every figure of a run; its JSON form is what the test of
// the harness reads.
type report struct {
	Machine    map[string]string                `json:"machine"`
	Targets    []string                         `json:"targets"` // column order
	Via        map[string]string                `json:"via"`     // how bulk and row 1 reach the origin per target
	Rate       map[string]*rateResult           `json:"rate"`    // connect, socks, keepalive
	Bulk       *bulkResult                      `json:"bulk"`
	Idle       map[string]map[string]idleResult `json:"idle"` // "HTTP CONNECT" or "SOCKS5" -> target
	Rules      *rulesResult                     `json:"rules"`
	Mismatches int64                            `json:"mismatches"` // operations that got bytes the origin did not send
	LoadStart  string                           `json:"loadavg_start"`
	LoadEnd    string                           `json:"loadavg_end"`
}

// rateResult is one of loads 1 to 3: per round, direct and each target.
type rateResult struct {
	Direct       []float64           `json:"direct"` // operations per second, per round
	DirectErrors int64               `json:"direct_errors"`
	Targets      map[string]*rateFig `json:"targets"`
}

type rateFig struct {
	Ratio      []float64 `json:"ratio"`        // per round: rate / direct rate
	Rate       []float64 `json:"rate"`         // per round: operations per second
	CPUPer10k  []float64 `json:"cpu_per_10k"`  // per round: the proxy's CPU seconds per 10,000 operations
	OriginConn []float64 `json:"origin_conns"` // per round: connections the origin accepted per operation
	Ops        int64     `json:"ops"`          // operations that succeeded, bytes checked
	Errors     int64     `json:"errors"`
	Mismatch   int64     `json:"mismatch"`
	FirstError string    `json:"first_error,omitempty"`
}

// bulkResult is load 4.
type bulkResult struct {
	DirectUp     []float64           `json:"direct_up"` // MB/s per round
	DirectDown   []float64           `json:"direct_down"`
	DirectErrors int                 `json:"direct_errors"`
	Targets      map[string]*bulkFig `json:"targets"`
}

type bulkFig struct {
	Via        string    `json:"via"`
	Up         []float64 `json:"up"` // MB/s per round
	Down       []float64 `json:"down"`
	UpRatio    []float64 `json:"up_ratio"`
	DownRatio  []float64 `json:"down_ratio"`
	CPUPerGiB  []float64 `json:"cpu_per_gib"`
	Bytes      int64     `json:"bytes"` // bytes that arrived exact, both ways, all rounds
	Errors     int       `json:"errors"`
	Mismatch   int64     `json:"mismatch"`
	FirstError string    `json:"first_error,omitempty"`
}

// rulesResult is load 7.
type rulesResult struct {
	Domains      int       `json:"domains"`
	Globs        int       `json:"globs"`
	StartSeconds float64   `json:"start_seconds"` // generate the lists, start, compile, listen
	Plain        []float64 `json:"plain"`         // tunnels per second without rules, per round
	Rules        []float64 `json:"rules"`         // with them
	Ratio        []float64 `json:"ratio"`
	Errors       int64     `json:"errors"`
	FirstError   string    `json:"first_error,omitempty"`
}

func newReport(o *options) *report {
	return &report{
		Via:       map[string]string{},
		Rate:      map[string]*rateResult{},
		Bulk:      &bulkResult{Targets: map[string]*bulkFig{}},
		Idle:      map[string]map[string]idleResult{},
		Rules:     &rulesResult{},
		LoadStart: loadavg(),
	}
}

func (r *report) rate(l string) *rateResult {
	if r.Rate[l] == nil {
		r.Rate[l] = &rateResult{Targets: map[string]*rateFig{}}
	}
	return r.Rate[l]
}

func (rl *rateResult) fig(name string) *rateFig {
	if rl.Targets[name] == nil {
		rl.Targets[name] = &rateFig{}
	}
	return rl.Targets[name]
}

func (f *rateFig) add(p, direct phase) {
	f.Ratio = append(f.Ratio, ratio(p.rate(), direct.rate()))
	f.Rate = append(f.Rate, p.rate())
	if c := per(p.cpu, float64(p.ops), 10000); c >= 0 {
		f.CPUPer10k = append(f.CPUPer10k, c)
	}
	if p.ops > 0 {
		f.OriginConn = append(f.OriginConn, float64(p.accepts)/float64(p.ops))
	}
	f.Ops += p.ops
	f.Errors += p.errs
	f.Mismatch += p.mismatch
	if p.firstErr != nil && f.FirstError == "" {
		f.FirstError = p.firstErr.Error()
	}
}

func (b *bulkResult) fig(name string) *bulkFig {
	if b.Targets[name] == nil {
		b.Targets[name] = &bulkFig{}
	}
	return b.Targets[name]
}

// note counts a transfer of n bytes that ended with err.
func (f *bulkFig) note(err error, n int64) {
	switch {
	case err == nil:
		f.Bytes += n
		return
	case strings.Contains(err.Error(), errMismatch.Error()):
		f.Mismatch++
	}
	f.Errors++
	if f.FirstError == "" {
		f.FirstError = err.Error()
	}
}

type idleByTarget map[string]idleResult

func (r *report) idle(v via) idleByTarget {
	k := v.String()
	if r.Idle[k] == nil {
		r.Idle[k] = map[string]idleResult{}
	}
	return r.Idle[k]
}

func (m idleByTarget) set(name string, r idleResult) { m[name] = r }

func median(v []float64) (float64, bool) {
	if len(v) == 0 {
		return 0, false
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2], true
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2, true
}

func fmtX(v []float64) string {
	m, ok := median(v)
	if !ok {
		return "–"
	}
	return fmt.Sprintf("%.2fx", m)
}

// group writes n with thousands separators: 9,000.
func group(n int64) string {
	s := strconv.FormatInt(n, 10)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

func fmtNum(v []float64, unit string) string {
	m, ok := median(v)
	if !ok {
		return "–"
	}
	return group(int64(m+0.5)) + unit
}

// cells returns the side-by-side table's rows: the load, one cell per
// target, and the target of issue 13.
func (r *report) rows(o *options) [][]string {
	var rows [][]string
	row := func(label, goal string, cell func(name string) string) {
		cells := []string{label}
		for _, n := range r.Targets {
			cells = append(cells, cell(n))
		}
		rows = append(rows, append(cells, goal))
	}
	rateCell := func(l, name string) string {
		if rl := r.Rate[l]; rl != nil && rl.Targets[name] != nil {
			return fmtX(rl.Targets[name].Ratio)
		}
		return "–"
	}
	w := strconv.Itoa(o.workers)
	if r.Rate["connect"] != nil || r.Rate["socks"] != nil {
		row("new tunnel + 1 KiB GET + close, "+w+" workers (HTTP CONNECT)", "≥ 0.45x", func(n string) string {
			if c := rateCell("connect", n); c != "–" {
				return c + r.fwdNote(n)
			}
			if c := rateCell("socks", n); c != "–" {
				return c + " (SOCKS5)"
			}
			return "–"
		})
		row("the same through SOCKS5", "≥ 0.45x", func(n string) string { return rateCell("socks", n) })
	}
	if r.Rate["keepalive"] != nil {
		row("keep-alive absolute-URI GET of 1 KiB, "+w+" workers", "≥ 0.30x", func(n string) string {
			if c := rateCell("keepalive", n); c != "–" {
				return c + r.fwdNote(n)
			}
			return "–"
		})
	}
	if len(r.Bulk.Targets) > 0 {
		row(fmt.Sprintf("one tunnel, %d MiB up / down", o.bulkMiB), "≥ 0.85x each way", func(n string) string {
			f := r.Bulk.Targets[n]
			if f == nil || len(f.UpRatio) == 0 {
				return "–"
			}
			s := fmtX(f.UpRatio) + " / " + fmtX(f.DownRatio)
			if f.Via == viaSOCKS.String() {
				s += " (SOCKS5)"
			}
			return s + r.fwdNote(n)
		})
	}
	if r.Rate["connect"] != nil || r.Rate["socks"] != nil {
		row("proxy CPU per 10,000 tunnels (row 1)", "≤ 2.0 s", func(n string) string {
			for _, l := range []string{"connect", "socks"} {
				if rl := r.Rate[l]; rl != nil && rl.Targets[n] != nil {
					if m, ok := median(rl.Targets[n].CPUPer10k); ok {
						if l == "socks" {
							return fmt.Sprintf("%.1f s (SOCKS5)", m)
						}
						return fmt.Sprintf("%.1f s", m) + r.fwdNote(n)
					}
				}
			}
			return "–"
		})
	}
	if len(r.Bulk.Targets) > 0 {
		row("proxy CPU per GiB (row 4, up and down)", "", func(n string) string {
			if f := r.Bulk.Targets[n]; f != nil {
				if m, ok := median(f.CPUPerGiB); ok {
					return fmt.Sprintf("%.2f s", m)
				}
			}
			return "–"
		})
	}
	if len(r.Idle) > 0 {
		row(fmt.Sprintf("idle tunnels (%s opened): memory and fds each, held", group(int64(o.idleN))),
			"≤ 10 KiB, 2 fds; 9,000 held under the 20,000-fd limit", func(n string) string {
				var parts []string
				for _, v := range []via{viaConnect, viaSOCKS, viaForward} {
					ir, ok := r.Idle[v.String()][n]
					if !ok {
						continue
					}
					s := fmt.Sprintf("%.1f KiB, %.1f fds, %s held", ir.KiB, ir.FDs, group(int64(ir.Held)))
					if ir.Held == 0 {
						s = "0 held"
					}
					if len(parts) > 0 || v == viaSOCKS && r.Via[n] != viaSOCKS.String() {
						s = "SOCKS5: " + s
					}
					parts = append(parts, s)
				}
				if len(parts) == 0 {
					return "–"
				}
				if len(parts) == 2 {
					return parts[0] + " (" + parts[1] + ")"
				}
				return parts[0] + r.fwdNote(n)
			})
	}
	if len(r.Rules.Ratio) > 0 {
		row(fmt.Sprintf("row 1 with %s domains + %s globs loaded / with none", group(int64(r.Rules.Domains)), group(int64(r.Rules.Globs))),
			"≥ 0.95x", func(n string) string {
				if n == "Sluice" {
					return fmtX(r.Rules.Ratio)
				}
				return "–"
			})
	}
	return rows
}

// fwdNote marks the figures of a TCP forwarder, which does no handshake.
func (r *report) fwdNote(n string) string {
	if r.Via[n] == viaForward.String() {
		return " (TCP forward)"
	}
	return ""
}

func writeTable(w io.Writer, head []string, rows [][]string) {
	fmt.Fprintf(w, "| %s |\n|", strings.Join(head, " | "))
	for range head {
		io.WriteString(w, "---|")
	}
	io.WriteString(w, "\n")
	for _, r := range rows {
		fmt.Fprintf(w, "| %s |\n", strings.Join(r, " | "))
	}
}

// writeMarkdown writes the side-by-side table, then the absolute figures
// and the machine.
func (r *report) writeMarkdown(w io.Writer, o *options) {
	head := append(append([]string{"load"}, r.Targets...), "Sluice target")
	for i, n := range head {
		if v := r.Machine[n+" version"]; v != "" && n != "Sluice" {
			head[i] = n + " " + v
		}
	}
	fmt.Fprintf(w, "\nEach figure: proxy / direct in the same round, median of %d rounds.\n\n", o.rounds)
	writeTable(w, head, r.rows(o))

	fmt.Fprintf(w, "\nAbsolute figures (medians; direct = no proxy):\n\n")
	head = append([]string{"load", "direct"}, r.Targets...)
	var rows [][]string
	for _, l := range []struct{ key, label, unit string }{
		{"connect", "row 1, HTTP CONNECT", " /s"}, {"socks", "row 2, SOCKS5", " /s"}, {"keepalive", "row 3, keep-alive GETs", " /s"},
	} {
		rl := r.Rate[l.key]
		if rl == nil {
			continue
		}
		cells := []string{l.label, fmtNum(rl.Direct, l.unit)}
		for _, n := range r.Targets {
			c := "–"
			if f := rl.Targets[n]; f != nil {
				c = fmtNum(f.Rate, l.unit)
				if m, ok := median(f.OriginConn); ok && l.key == "keepalive" {
					c += fmt.Sprintf(", %.2f origin connections per request", m)
				}
				if f.Errors > 0 {
					c += fmt.Sprintf(" (%d errors)", f.Errors)
				}
			}
			cells = append(cells, c)
		}
		rows = append(rows, cells)
	}
	if len(r.Bulk.Targets) > 0 {
		cells := []string{"row 4, MB/s up / down", fmtNum(r.Bulk.DirectUp, "") + " / " + fmtNum(r.Bulk.DirectDown, "")}
		for _, n := range r.Targets {
			c := "–"
			if f := r.Bulk.Targets[n]; f != nil {
				c = fmtNum(f.Up, "") + " / " + fmtNum(f.Down, "")
				if f.Errors > 0 {
					c += fmt.Sprintf(" (%d errors)", f.Errors)
				}
			}
			cells = append(cells, c)
		}
		rows = append(rows, cells)
	}
	for _, v := range []via{viaConnect, viaSOCKS, viaForward} {
		m := r.Idle[v.String()]
		if m == nil {
			continue
		}
		cells := []string{"row 6, " + v.String() + ": RSS KiB, fds before → held", "–"}
		for _, n := range r.Targets {
			c := "–"
			if ir, ok := m[n]; ok {
				c = fmt.Sprintf("%s → %s KiB, %d → %d fds, %d of %d held", group(ir.RSS0), group(ir.RSS1), ir.FD0, ir.FD1, ir.Held, ir.Wanted)
			}
			cells = append(cells, c)
		}
		rows = append(rows, cells)
	}
	if len(r.Rules.Ratio) > 0 {
		cells := []string{"row 7, tunnels/s no rules / rules", "–"}
		for _, n := range r.Targets {
			c := "–"
			if n == "Sluice" {
				c = fmtNum(r.Rules.Plain, "") + " / " + fmtNum(r.Rules.Rules, "") + fmt.Sprintf(" (start with rules %.1f s)", r.Rules.StartSeconds)
			}
			cells = append(cells, c)
		}
		rows = append(rows, cells)
	}
	writeTable(w, head, rows)

	fmt.Fprintf(w, "\nMachine: %s × %s, %s RAM, Linux %s, %s; load average %s at the start, %s at the end.\n",
		r.Machine["nproc"], r.Machine["cpu"], r.Machine["ram"], r.Machine["kernel"], r.Machine["go"], r.LoadStart, r.LoadEnd)
	var vs []string
	for _, n := range r.Targets {
		if v := r.Machine[n+" version"]; v != "" {
			vs = append(vs, n+" "+v)
		}
	}
	if len(vs) > 0 {
		fmt.Fprintf(w, "Versions: %s.\n", strings.Join(vs, ", "))
	}
	fmt.Fprintf(w, "Run: %d rounds, %d workers, each phase at most %v or %s operations; proxies at %s open files.\n",
		o.rounds, o.workers, o.duration, group(int64(o.count)), group(int64(o.nofile)))
	if r.Mismatches > 0 {
		fmt.Fprintf(w, "\n**%d operations got bytes the origin did not send.**\n", r.Mismatches)
	}
}

func (r *report) writeJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// machine records what the README's table needs to be read against.
func (r *report) machine(o *options) {
	m := map[string]string{"nproc": strconv.Itoa(runtime.NumCPU()), "go": runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m["cpu"] = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) >= 2 && f[0] == "MemTotal:" {
				kib, _ := strconv.ParseInt(f[1], 10, 64)
				m["ram"] = fmt.Sprintf("%.1f GiB", float64(kib)/(1<<20))
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m["kernel"] = strings.TrimSpace(string(b))
	}
	for _, p := range o.proxies {
		switch p {
		case "squid":
			if bin, err := lookTool(o.squidBin); err == nil {
				out, _ := exec.Command(bin, "-v").Output()
				if f := strings.Fields(strings.SplitN(string(out), "\n", 2)[0]); len(f) > 0 {
					m["Squid version"] = f[len(f)-1]
				}
			}
		case "microsocks":
			out, _ := exec.Command("dpkg-query", "-W", "-f", "${Version}", "microsocks").Output()
			v, _, _ := strings.Cut(strings.TrimSpace(string(out)), "-") // Debian's revision
			m["microsocks version"] = v
		case "haproxy":
			if bin, err := lookTool(o.haproxyBin); err == nil {
				out, _ := exec.Command(bin, "-v").Output()
				if f := strings.Fields(strings.SplitN(string(out), "\n", 2)[0]); len(f) > 2 {
					v, _, _ := strings.Cut(f[2], "-") // Debian's revision
					m["HAProxy version"] = v
				}
			}
		case "sluice":
			out, _ := exec.Command(o.sluiceBin, "version").Output()
			m["Sluice version"] = strings.TrimPrefix(strings.TrimSpace(string(out)), "sluice ")
		}
	}
	r.Machine = m
}
