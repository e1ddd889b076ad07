package test

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// accessConfig logs to a file; its traffic is allowed, blocked, tunnelled
// and failed, over HTTP and SOCKS5.
const accessConfig = `
default: allow
hosts: {allowed.test: 127.0.0.1, ads.test: 127.0.0.1, down.test: 127.0.0.1}
rules:
  - block: [ads.test]
`

// squidLine is one access.log line in Squid's native format.
type squidLine struct {
	time                   float64
	elapsed                int
	client, code           string
	status                 int
	bytes                  int64
	method, url, user      string
	hierarchy, peer, ctype string
}

// parseSquid parses a line field by field, as SARG and GoAccess split it:
// whitespace-separated, ten fields.
func parseSquid(t *testing.T, line string) squidLine {
	t.Helper()
	f := strings.Fields(line)
	if len(f) != 10 {
		t.Fatalf("%d fields, want 10: %q", len(f), line)
	}
	var l squidLine
	var err error
	if l.time, err = strconv.ParseFloat(f[0], 64); err != nil || !strings.Contains(f[0], ".") || len(f[0][strings.IndexByte(f[0], '.')+1:]) != 3 {
		t.Fatalf("time %q: want seconds.milliseconds", f[0])
	}
	if l.elapsed, err = strconv.Atoi(f[1]); err != nil || l.elapsed < 0 {
		t.Fatalf("elapsed %q", f[1])
	}
	l.client = f[2]
	code, status, ok := strings.Cut(f[3], "/")
	if l.status, err = strconv.Atoi(status); !ok || err != nil || len(status) != 3 {
		t.Fatalf("code/status %q", f[3])
	}
	l.code = code
	if l.bytes, err = strconv.ParseInt(f[4], 10, 64); err != nil {
		t.Fatalf("bytes %q", f[4])
	}
	l.method, l.url, l.user = f[5], f[6], f[7]
	h, peer, ok := strings.Cut(f[8], "/")
	if !ok {
		t.Fatalf("hierarchy/peer %q", f[8])
	}
	l.hierarchy, l.peer, l.ctype = h, peer, f[9]
	return l
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
}

// waitLines waits until path has n lines.
func waitLines(t *testing.T, path string, n int) []string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		data, _ := os.ReadFile(path)
		if strings.Count(string(data), "\n") >= n || time.Now().After(deadline) {
			lines := readLines(t, path)
			if len(lines) < n {
				t.Fatalf("%s has %d lines, want %d:\n%s", path, len(lines), n, data)
			}
			return lines
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// closedPort returns a loopback port nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	ln.Close()
	return port
}

// driveTraffic sends, in order: an allowed plain GET, a blocked plain GET,
// an allowed CONNECT, a SOCKS5 connection, and a plain GET whose dial
// fails. It returns the number of requests.
func driveTraffic(t *testing.T, proxy string, o *origin, down string) int {
	t.Helper()
	for _, args := range [][]string{
		{"-x", "http://" + proxy, "http://allowed.test:" + o.port + "/page?secret=1"},
		{"-x", "http://" + proxy, "http://ads.test:" + o.port + "/banner"},
		{"-p", "-x", "http://" + proxy, "http://allowed.test:" + o.port + "/tunnel"},
		{"-x", "socks5h://" + proxy, "http://allowed.test:" + o.port + "/socks"},
		{"-x", "http://" + proxy, "http://down.test:" + down + "/gone"},
	} {
		curl(t, args...)
	}
	return 5
}

// TestAccessLogSquid writes the access log in Squid's format to a file and
// reads it back field by field, then with GoAccess; the server's own
// messages stay on stderr, the file is 0640, and SIGUSR1 after a rename
// (logrotate) starts a new file.
func TestAccessLogSquid(t *testing.T) {
	o := newOrigin(t, false)
	down := closedPort(t)
	p := startSluice(t, accessConfig+"access_log: logs/access.log\nlog_format: squid\n", map[string]string{"logs/.keep": ""})
	path := filepath.Join(p.dir, "logs/access.log")
	n := driveTraffic(t, p.addr, o, down)
	lines := waitLines(t, path, n)
	if len(lines) != n {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), n, strings.Join(lines, "\n"))
	}
	now := float64(time.Now().UnixMilli()) / 1000
	want := []struct {
		code                string
		status              int
		method, url         string
		hierarchy, peer, ct string
	}{
		{"TCP_MISS", 200, "GET", "http://allowed.test:" + o.port + "/page", "HIER_DIRECT", "127.0.0.1", "text/plain"},
		{"TCP_DENIED", 403, "GET", "http://ads.test:" + o.port + "/banner", "HIER_NONE", "-", "text/html"},
		{"TCP_TUNNEL", 200, "CONNECT", "allowed.test:" + o.port, "HIER_DIRECT", "127.0.0.1", "-"},
		{"TCP_TUNNEL", 200, "CONNECT", "allowed.test:" + o.port, "HIER_DIRECT", "127.0.0.1", "-"},
		// The address tried is named, as the dial error is.
		{"TCP_MISS", 502, "GET", "http://down.test:" + down + "/gone", "HIER_DIRECT", "127.0.0.1", "text/plain"},
	}
	var bytes int64
	for i, line := range lines {
		l := parseSquid(t, line)
		bytes += l.bytes
		w := want[i]
		if l.code != w.code || l.status != w.status || l.method != w.method || l.url != w.url || l.hierarchy != w.hierarchy ||
			l.peer != w.peer || l.ctype != w.ct || l.client != "127.0.0.1" || l.user != "-" || l.time > now+1 || l.time < now-60 {
			t.Errorf("line %d: %q\nparsed %+v\nwant %+v", i+1, line, l, w)
		}
		if l.status == 200 && l.bytes == 0 {
			t.Errorf("line %d: no bytes counted: %q", i+1, line)
		}
	}
	if strings.Contains(strings.Join(lines, "\n"), "secret") {
		t.Errorf("the query string reached the Squid log:\n%s", strings.Join(lines, "\n"))
	}
	if log := p.Log(); strings.Contains(log, `"msg":"access"`) || strings.Contains(log, "TCP_") || !strings.Contains(log, "listening on") {
		t.Errorf("stderr should have the server's messages and no access line:\n%s", log)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("access log mode %v (%v), want 0640", fi.Mode().Perm(), err)
	}

	// GoAccess reads the file unchanged, with Squid's layout.
	report := goaccessJSON(t, path)
	if g := report.General; g.TotalRequests != n || g.ValidRequests != n || g.FailedRequests != 0 || g.Bandwidth != bytes {
		t.Errorf("GoAccess: %+v, want %d valid requests, none failed, %d bytes", g, n, bytes)
	}
	var urls []string
	for _, r := range report.Requests.Data {
		urls = append(urls, r.Data)
	}
	for _, w := range want {
		found := false
		for _, u := range urls { // GoAccess's %U, last, takes the rest of the line
			found = found || strings.HasPrefix(u, w.url+" ")
		}
		if !found {
			t.Errorf("GoAccess did not report %s among %q", w.url, urls)
		}
	}

	// logrotate: rename, SIGUSR1, new lines go to a new file.
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	p.waitLog(t, `SIGUSR1: access log reopened`)
	curl(t, "-x", "http://"+p.addr, "http://allowed.test:"+o.port+"/after-rotate")
	lines = waitLines(t, path, 1)
	if len(lines) != 1 || !strings.Contains(lines[0], "/after-rotate") {
		t.Errorf("new file after SIGUSR1:\n%s", strings.Join(lines, "\n"))
	}
	if old := readLines(t, path+".1"); len(old) != n {
		t.Errorf("rotated file has %d lines, want %d", len(old), n)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("reopened access log mode %v (%v), want 0640", fi.Mode().Perm(), err)
	}
}

type goaccessReport struct {
	General struct {
		TotalRequests  int   `json:"total_requests"`
		ValidRequests  int   `json:"valid_requests"`
		FailedRequests int   `json:"failed_requests"`
		Bandwidth      int64 `json:"bandwidth"`
	} `json:"general"`
	Requests struct {
		Data []struct {
			Data string `json:"data"`
		} `json:"data"`
	} `json:"requests"`
}

// goaccessJSON runs GoAccess over a Squid-format log and returns its JSON report.
func goaccessJSON(t *testing.T, path string) goaccessReport {
	t.Helper()
	bin := requireTool(t, "goaccess")
	out := filepath.Join(t.TempDir(), "report.json")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, path, "--log-format=%x.%^ %~%L %h %^/%s %b %m %U",
		"--date-format=%s", "--time-format=%s", "--no-global-config", "-o", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("goaccess: %v\n%s", err, b)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var r goaccessReport
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatalf("goaccess report: %v\n%.2000s", err, data)
	}
	return r
}

// TestAccessLogJSONFile writes JSON access lines to a file: one object a
// line, request_id, the path of plain requests, nothing on stderr.
func TestAccessLogJSONFile(t *testing.T) {
	o := newOrigin(t, false)
	down := closedPort(t)
	p := startSluice(t, accessConfig+"access_log: access.json\n", nil)
	path := filepath.Join(p.dir, "access.json")
	n := driveTraffic(t, p.addr, o, down)
	lines := waitLines(t, path, n)
	type entry = map[string]any
	var got []entry
	for _, line := range lines {
		var e entry
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("not JSON: %q: %v", line, err)
		}
		got = append(got, e)
	}
	want := []entry{
		{"msg": "access", "proto": "http", "method": "GET", "target": "allowed.test:" + o.port, "path": "/page", "verdict": "allow", "status": 200.0, "route": "direct", "peer": "127.0.0.1"},
		{"msg": "access", "proto": "http", "method": "GET", "target": "ads.test:" + o.port, "path": "/banner", "verdict": "block", "status": 403.0, "category": ""},
		{"msg": "access", "proto": "http", "method": "CONNECT", "target": "allowed.test:" + o.port, "verdict": "allow", "status": 200.0},
		{"msg": "access", "proto": "socks5", "cmd": "connect", "target": "allowed.test:" + o.port, "verdict": "allow", "reply": "0x00", "peer": "127.0.0.1"},
		{"msg": "access", "proto": "http", "method": "GET", "target": "down.test:" + down, "path": "/gone", "verdict": "allow", "status": 502.0},
	}
	ids := map[any]bool{}
	for i, w := range want {
		for k, v := range w {
			if got[i][k] != v {
				t.Errorf("line %d: %s = %v, want %v\n%s", i+1, k, got[i][k], v, lines[i])
			}
		}
		if id, _ := got[i]["request_id"].(string); id == "" || ids[id] {
			t.Errorf("line %d: request_id %v missing or repeated", i+1, got[i]["request_id"])
		}
		ids[got[i]["request_id"]] = true
		if _, ok := got[i]["id"]; ok {
			t.Errorf("line %d has both id and request_id", i+1)
		}
	}
	if _, ok := got[2]["path"]; ok {
		t.Errorf("a tunnel has a path: %s", lines[2])
	}
	if log := p.Log(); strings.Contains(log, `"msg":"access"`) {
		t.Errorf("access lines on stderr too:\n%s", log)
	}
}

// TestAccessLogReload: a reload that points access_log at a file that
// cannot be created fails and keeps the running log; one that can moves
// the lines there.
func TestAccessLogReload(t *testing.T) {
	o := newOrigin(t, false)
	p := startSluice(t, accessConfig+"access_log: a.log\nlog_format: squid\n", nil)
	cfg := filepath.Join(p.dir, "sluice.yaml")
	reload := func(extra string) string {
		writeFiles(t, p.dir, map[string]string{"sluice.yaml": accessConfig + extra})
		out, _ := runCLI(t, p.dir, "reload", "--config", cfg, "--pid", strconv.Itoa(p.cmd.Process.Pid))
		return out
	}
	curl(t, "-x", "http://"+p.addr, "http://allowed.test:"+o.port+"/one")
	waitLines(t, filepath.Join(p.dir, "a.log"), 1)
	reload("access_log: missing/dir/b.log\nlog_format: squid\n")
	p.waitLog(t, `reload failed; keeping the running rules.*access_log`)
	curl(t, "-x", "http://"+p.addr, "http://allowed.test:"+o.port+"/two")
	if lines := waitLines(t, filepath.Join(p.dir, "a.log"), 2); !strings.Contains(lines[1], "/two") {
		t.Errorf("after a failed reload:\n%s", strings.Join(lines, "\n"))
	}
	reload("access_log: c.log\n")
	p.waitLog(t, `rules reloaded`)
	curl(t, "-x", "http://"+p.addr, "http://allowed.test:"+o.port+"/three")
	lines := waitLines(t, filepath.Join(p.dir, "c.log"), 1)
	var e map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &e); err != nil || e["path"] != "/three" {
		t.Errorf("after the reload to c.log (json): %q %v", lines[0], err)
	}
	f, _ := os.Open(filepath.Join(p.dir, "a.log"))
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.Contains(sc.Text(), "/three") {
			t.Errorf("a.log still written after the reload")
		}
	}
}

// TestAccessLogValidate: `config validate` and `serve` refuse an
// access_log in a folder that does not exist, naming it.
func TestAccessLogValidate(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "sluice.yaml")
	writeFiles(t, dir, map[string]string{"sluice.yaml": "listen: [\"127.0.0.1:0\"]\naccess_log: nowhere/access.log\n"})
	out, code := runCLI(t, dir, "config", "validate", "--config", cfg)
	if code != 2 || !strings.Contains(out, "access_log "+filepath.Join(dir, "nowhere/access.log")) {
		t.Errorf("validate (exit %d): %s", code, out)
	}
	out, code = runCLI(t, dir, "serve", "--config", cfg)
	if code != 2 || !strings.Contains(out, filepath.Join(dir, "nowhere/access.log")) {
		t.Errorf("serve (exit %d): %s", code, out)
	}
}
