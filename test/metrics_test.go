package test

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrape reads /metrics from the admin listener with the Prometheus text
// parser.
func scrape(t *testing.T, admin string) map[string]*dto.MetricFamily {
	t.Helper()
	code, body := httpGet(t, "http://"+admin+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d %.300q", code, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v\n%s", err, body)
	}
	return fams
}

// metricValue returns the value of the series of fams named name whose
// labels are exactly labels ("k=v" pairs), and whether it exists.
func metricValue(fams map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
	for _, m := range f.GetMetric() {
		var got []string
		for _, l := range m.GetLabel() {
			got = append(got, l.GetName()+"="+l.GetValue())
		}
		if strings.Join(got, ",") != strings.Join(labels, ",") {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Untyped != nil:
			return m.Untyped.GetValue(), true
		}
	}
	return 0, false
}

// sumOf adds up every series of name.
func sumOf(fams map[string]*dto.MetricFamily, name string) float64 {
	var n float64
	if f := fams[name]; f != nil {
		for _, m := range f.GetMetric() {
			n += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return n
}

// accessBytes sums the up and down bytes of p's access lines per proto
// ("socks4a" counts as "socks4").
func accessBytes(t *testing.T, p *proc) map[string][2]float64 {
	t.Helper()
	out := map[string][2]float64{}
	for _, l := range strings.Split(p.Log(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) != nil || m["msg"] != "access" {
			continue
		}
		proto, _ := m["proto"].(string)
		if strings.HasPrefix(proto, "socks4") {
			proto = "socks4"
		}
		up, _ := m["up"].(float64)
		down, _ := m["down"].(float64)
		v := out[proto]
		out[proto] = [2]float64{v[0] + up, v[1] + down}
	}
	return out
}

const metricsConfig = `
admin: 127.0.0.1:0
default: allow
users: %s
limits: {per_client: 2}
hosts: {allowed.test: 127.0.0.1, blocked.test: 127.0.0.1, games.test: 127.0.0.1, pool.test: 127.0.0.1}
categories:
  games: [lists/games.txt]
upstreams:
  dead: socks5://127.0.0.1:%d
  pool: {failover: [dead, direct]}
rules:
  - block: ["category:games"]
  - block: [blocked.test]
  - allow: [pool.test]
    via: pool
`

// TestMetrics drives known traffic through the real binary (allowed,
// blocked by a rule and by a category, CONNECT, SOCKS5, SOCKS4, a failed
// dial, a failover, bad passwords on both front ends, a connection beyond
// limits.per_client, a reload and a failed reload) and checks the exact
// values /metrics reports, parsed with the Prometheus text parser.
func TestMetrics(t *testing.T) {
	origin := newOrigin(t, false)
	users := htpasswdFile(t, "alice", "wonderland")
	p := startSluice(t, fmt.Sprintf(metricsConfig, users, atoi(closedPort(t))), map[string]string{"lists/games.txt": "games.test\n"})
	admin := p.adminAddr(t)
	proxy := "http://alice:wonderland@" + p.addr
	web := func(host string) string { return "http://" + host + ":" + origin.port + "/" }

	fams := scrape(t, admin)
	for _, name := range []string{"go_goroutines", "process_open_fds", "sluice_build_info"} {
		if _, ok := fams[name]; !ok {
			t.Errorf("/metrics lacks %s", name)
		}
	}
	if v, _ := metricValue(fams, "sluice_category_entries", "category=games"); v != 1 {
		t.Errorf("sluice_category_entries{games} = %v, want 1", v)
	}
	if v, ok := metricValue(fams, "sluice_requests_total", "category=", "frontend=http", "verdict=allow"); ok || v != 0 {
		t.Errorf("requests before any traffic: %v %v", v, ok)
	}

	// HTTP: allowed, blocked by a rule, blocked by a category, a CONNECT
	// tunnel, a failed dial (a closed port), a failover, a bad password.
	if out, code := curl(t, "-x", proxy, web("allowed.test")); code != 0 || !strings.Contains(out, "hello from origin") {
		t.Fatalf("allowed: exit %d %q", code, out)
	}
	for _, host := range []string{"blocked.test", "games.test"} {
		if out, _ := curl(t, "-o", "/dev/null", "-w", "%{http_code}", "-x", proxy, web(host)); out != "403" {
			t.Errorf("%s: %q, want 403", host, out)
		}
	}
	if out, code := curl(t, "-p", "-x", proxy, web("allowed.test")); code != 0 || !strings.Contains(out, "hello from origin") {
		t.Errorf("CONNECT: exit %d %q", code, out)
	}
	if out, _ := curl(t, "-o", "/dev/null", "-w", "%{http_code}", "-x", proxy, "http://127.0.0.1:"+closedPort(t)+"/"); out != "502" {
		t.Errorf("failed dial: %q, want 502", out)
	}
	if out, code := curl(t, "-x", proxy, web("pool.test")); code != 0 || !strings.Contains(out, "host=pool.test") {
		t.Errorf("through the failover route: exit %d %q", code, out)
	}
	if out, _ := curl(t, "-o", "/dev/null", "-w", "%{http_code}", "-x", "http://alice:wrong@"+p.addr, web("allowed.test")); out != "407" {
		t.Errorf("bad password: %q, want 407", out)
	}
	// SOCKS5 with the right and a wrong password; SOCKS4, which cannot
	// send a password, is refused.
	if out, code := curl(t, "-x", "socks5h://alice:wonderland@"+p.addr, web("allowed.test")); code != 0 || !strings.Contains(out, "hello from origin") {
		t.Errorf("SOCKS5: exit %d %q", code, out)
	}
	if _, code := curl(t, "-x", "socks5h://alice:wrong@"+p.addr, web("allowed.test")); code == 0 {
		t.Errorf("SOCKS5 with a wrong password succeeded")
	}
	if rep := socks4From(t, "127.0.0.1", p.addr, atoi(origin.port)); rep == 0x5a {
		t.Errorf("SOCKS4 with users set: granted")
	}
	// Two tunnels from 127.0.0.9 stay open: a third connection from there
	// is beyond per_client and gets 503.
	auth := "Proxy-Authorization: Basic YWxpY2U6d29uZGVybGFuZA==\r\n" // alice:wonderland
	var held []net.Conn
	for range 2 {
		c := dialFrom(t, "127.0.0.9", p.addr)
		held = append(held, c)
		fmt.Fprintf(c, "CONNECT 127.0.0.1:%s HTTP/1.1\r\nHost: x\r\n%s\r\n", origin.port, auth)
		buf := make([]byte, 64)
		if n, err := c.Read(buf); err != nil || !strings.Contains(string(buf[:n]), " 200 ") {
			t.Fatalf("held tunnel: %v %q", err, buf[:n])
		}
	}
	if code, c, _ := limitConnect(t, "127.0.0.9", p.addr, "127.0.0.1:"+origin.port); code != 503 {
		t.Errorf("third connection from one client with per_client 2: %d, want 503", code)
	} else {
		c.Close()
	}

	// 10 requests and connections ended with an access line; the held
	// tunnels are still open.
	eventually(t, "every request counted", func() bool { return sumOf(scrape(t, admin), "sluice_requests_total") == 10 })
	fams = scrape(t, admin)
	want := []struct {
		name   string
		labels []string
		value  float64
	}{
		{"sluice_requests_total", []string{"category=", "frontend=http", "verdict=allow"}, 4}, // allowed, CONNECT, failed dial, pool
		{"sluice_requests_total", []string{"category=", "frontend=http", "verdict=block"}, 1},
		{"sluice_requests_total", []string{"category=games", "frontend=http", "verdict=block"}, 1},
		{"sluice_requests_total", []string{"category=", "frontend=http", "verdict=none"}, 1},
		{"sluice_requests_total", []string{"category=", "frontend=socks5", "verdict=allow"}, 1},
		{"sluice_requests_total", []string{"category=", "frontend=socks5", "verdict=none"}, 1},
		{"sluice_requests_total", []string{"category=", "frontend=socks4", "verdict=none"}, 1},
		{"sluice_connections_total", []string{"frontend=http"}, 9},
		{"sluice_connections_total", []string{"frontend=socks5"}, 2},
		{"sluice_connections_total", []string{"frontend=socks4"}, 1},
		{"sluice_connections_active", []string{"frontend=http"}, 2},
		{"sluice_connections_active", []string{"frontend=socks5"}, 0},
		{"sluice_connections_rejected_total", []string{"reason=per_client"}, 1},
		{"sluice_connections_rejected_total", []string{"reason=max_conns"}, 0},
		{"sluice_dial_errors_total", []string{"kind=refused"}, 1},
		{"sluice_auth_failures_total", []string{"frontend=http"}, 1},
		{"sluice_auth_failures_total", []string{"frontend=socks5"}, 1},
		{"sluice_upstream_failovers_total", []string{"route=pool"}, 1},
		{"sluice_reloads_total", nil, 0},
		{"sluice_reload_failures_total", nil, 0},
		{"sluice_category_entries", []string{"category=games"}, 1},
	}
	check := func(when string) {
		t.Helper()
		for _, w := range want {
			if v, ok := metricValue(fams, w.name, w.labels...); !ok || v != w.value {
				t.Errorf("%s: %s%v = %v (present %v), want %v", when, w.name, w.labels, v, ok, w.value)
			}
		}
		if n := len(fams["sluice_dial_errors_total"].GetMetric()); n != 1 {
			t.Errorf("%s: %d dial error kinds, want only refused", when, n)
		}
	}
	check("after the traffic")
	// The dead member of the failover route is marked down (until its
	// back-off ends or a reload builds the routes anew); the route itself
	// still works through direct. The status page says so too.
	for route, up := range map[string]float64{"dead": 0, "pool": 1} {
		if v, ok := metricValue(fams, "sluice_upstream_up", "route="+route); !ok || v != up {
			t.Errorf("sluice_upstream_up{%s} = %v (present %v), want %v", route, v, ok, up)
		}
	}
	if code, page := httpGet(t, "http://"+admin+"/"); code != 200 ||
		!strings.Contains(page, `<td>dead</td><td><span class="down">down</span>`) || !strings.Contains(page, `<td>pool</td><td><span class="up">up</span>`) {
		t.Errorf("status page: %d, upstream health missing:\n%s", code, page)
	}
	// Bytes: the sums of the access lines, per front end.
	lines := accessBytes(t, p)
	for _, fe := range []string{"http", "socks5", "socks4"} {
		for i, dir := range []string{"up", "down"} {
			v, _ := metricValue(fams, "sluice_bytes_total", "direction="+dir, "frontend="+fe)
			if v != lines[fe][i] {
				t.Errorf("sluice_bytes_total{%s,%s} = %v, the access lines say %v", fe, dir, v, lines[fe][i])
			}
		}
	}
	if v, _ := metricValue(fams, "sluice_bytes_total", "direction=down", "frontend=socks5"); v < float64(len("hello from origin")) {
		t.Errorf("SOCKS5 bytes down %v: fewer than the page", v)
	}

	// The tunnels end: no connection is active any more.
	for _, c := range held {
		c.Close()
	}
	eventually(t, "the held tunnels counted closed", func() bool {
		fams := scrape(t, admin)
		v, _ := metricValue(fams, "sluice_connections_active", "frontend=http")
		return v == 0 && sumOf(fams, "sluice_requests_total") == 12
	})
	want[0].value += 2 // the two tunnels, allowed

	// A reload and a failed reload: the counters survive both.
	out, code := runCLI(t, p.dir, "reload", "--pid", strconv.Itoa(p.cmd.Process.Pid))
	if code != 0 {
		t.Fatalf("sluice reload: exit %d: %s", code, out)
	}
	eventually(t, "the reload counted", func() bool {
		v, _ := metricValue(scrape(t, admin), "sluice_reloads_total")
		return v == 1
	})
	broken := filepath.Join(p.dir, "broken.yaml")
	if err := os.WriteFile(broken, []byte("rules:\n  - block: [\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(broken, filepath.Join(p.dir, "sluice.yaml")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the failed reload counted", func() bool {
		v, _ := metricValue(scrape(t, admin), "sluice_reload_failures_total")
		return v >= 1
	})
	fams = scrape(t, admin)
	want = want[:len(want)-3] // reloads, failures and entries change
	for i := range want {
		if want[i].name == "sluice_connections_active" && want[i].labels[0] == "frontend=http" {
			want[i].value = 0
		}
	}
	check("after a reload and a failed reload")
	for _, w := range []struct {
		name  string
		value float64
	}{{"sluice_reloads_total", 1}, {"sluice_reload_failures_total", 1}, {"sluice_last_reload_successful", 0}} {
		if v, _ := metricValue(fams, w.name); v != w.value {
			t.Errorf("%s = %v, want %v", w.name, v, w.value)
		}
	}
	if v, _ := metricValue(fams, "sluice_category_entries", "category=games"); v != 1 {
		t.Errorf("the failed reload changed the running rules: entries %v", v)
	}

	// The status page, rendered by headless Chromium: the chart and the
	// last hour's blocks are there.
	statusPageInChromium(t, admin)
}

// statusPageInChromium loads the admin status page in headless Chromium
// (directly: the proxy refuses to carry anyone to its admin address) and
// checks the DOM for the inline SVG chart with its 60 minutes, the most
// blocked category and hosts and the failed reload; it also takes a
// screenshot (into $SLUICE_SCREENSHOTS when set, to look at).
func statusPageInChromium(t *testing.T, admin string) {
	t.Helper()
	url := "http://" + admin + "/"
	dom := runChromium(t, "direct://", "--dump-dom", url)
	for _, want := range []string{`<svg id="chart"`, `<rect class="blk"`, "-59m:", "now:", "games", "blocked.test", "games.test",
		"failed:", `http-equiv="refresh"`, `<td>dead</td>`} {
		if !strings.Contains(dom, want) {
			t.Errorf("status page in Chromium lacks %q:\n%s", want, dom)
		}
	}
	if n := strings.Count(dom, `<rect class="req"`); n != 60 {
		t.Errorf("status chart has %d minute bars, want 60", n)
	}
	for _, bad := range []string{"<script", "src=\"http", "href=\"http"} {
		if strings.Contains(dom, bad) {
			t.Errorf("status page is not self-contained: has %q", bad)
		}
	}
	dir := os.Getenv("SLUICE_SCREENSHOTS")
	if dir == "" {
		dir = t.TempDir()
	}
	shot := filepath.Join(dir, "status.png")
	runChromium(t, "direct://", "--window-size=1024,1400", "--hide-scrollbars", "--screenshot="+shot, url)
	if st, err := os.Stat(shot); err != nil || st.Size() == 0 {
		t.Fatalf("no screenshot of the status page: %v", err)
	}
	t.Logf("status page screenshot: %s", shot)
}
