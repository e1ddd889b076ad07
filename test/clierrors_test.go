package test

import (
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// runCLISplit runs the binary to completion and returns its standard
// output, standard error and exit status, apart.
func runCLISplit(t *testing.T, dir string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(sluiceBin, args...)
	cmd.Dir = dir
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("sluice %v: %v", args, err)
		}
		code = ee.ExitCode()
	}
	return out.String(), errOut.String(), code
}

// busyPort returns a loopback address something listens on.
func busyPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().String()
}

// TestServeBusyPort: serve on a port another program holds says so in one
// line with a hint, and exits 2, for the proxy's, the transparent and the
// admin listener alike.
func TestServeBusyPort(t *testing.T) {
	busy := busyPort(t)
	cases := []struct {
		name, config string
		args         []string
		want         string
	}{
		{"--listen", "", []string{"-l", busy},
			"sluice: cannot listen on " + busy + ": address already in use (is another sluice running?)"},
		{"listen:", "listen: [\"" + busy + "\"]\n", nil,
			"sluice: cannot listen on " + busy + ": address already in use (is another sluice running?)"},
		{"transparent", "listen: [\"127.0.0.1:0\"]\ntransparent:\n  listen: [\"" + busy + "\"]\n", nil,
			"sluice: transparent: cannot listen on " + busy + ": address already in use (is another sluice running?)"},
		{"admin", "listen: [\"127.0.0.1:0\"]\nadmin: " + busy + "\n", nil,
			"sluice: admin: cannot listen on " + busy + ": address already in use (is another sluice running?)"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir, cfg := writeConfig(t, "default: allow\n"+c.config, nil)
			_, stderr, code := runCLISplit(t, dir, append([]string{"serve", "-c", cfg}, c.args...)...)
			if code != 2 {
				t.Errorf("exit %d, want 2:\n%s", code, stderr)
			}
			lines := strings.Split(strings.TrimSpace(stderr), "\n")
			if last := lines[len(lines)-1]; last != c.want {
				t.Errorf("last stderr line\n%q\nwant\n%q\nstderr:\n%s", last, c.want, stderr)
			}
			if strings.Count(stderr, "sluice: ") != 1 {
				t.Errorf("want one error line:\n%s", stderr)
			}
		})
	}
}

// TestCLIExitStatusConvention runs the real binary: every command follows
// 0 done, 1 nothing to do or a negative answer, 2 error, and a wrong
// command line prints one line and the usage line.
func TestCLIExitStatusConvention(t *testing.T) {
	users := htpasswdFile(t, "alice", "pw")
	dir, cfg := writeConfig(t, "default: allow\nusers: "+users+"\ncategories:\n  ads: lists/ads.txt\nrules:\n  - block: [\"category:ads\"]\n",
		map[string]string{"lists/ads.txt": "ads.test\n"})
	cases := []struct {
		args   []string
		code   int
		stderr string // exact
	}{
		{[]string{"check"}, 2, "sluice: check needs 1 argument, got 0\n" +
			"usage: sluice check [--config FILE] [--client IP] [--user NAME] [--time T] [--no-resolve] TARGET\n"},
		{[]string{"check", "-c", cfg, "--client", "notanip", "x.test"}, 2, `sluice: --client: "notanip" is not an IP address` + "\n" +
			"usage: sluice check [--config FILE] [--client IP] [--user NAME] [--time T] [--no-resolve] TARGET\n"},
		{[]string{"check", "-c", filepath.Join(dir, "none.yaml"), "x.test"}, 2,
			"sluice: cannot open " + filepath.Join(dir, "none.yaml") + ": no such file or directory\n"},
		{[]string{"check", "-c", cfg, "--no-resolve", "www.ads.test"}, 1, ""},
		{[]string{"check", "-c", cfg, "--no-resolve", "--user", "bob", "x.test"}, 0,
			"warning: --user bob: not a user in " + users + "; the rules are decided for this name anyway\n"},
		{[]string{"list", "-c", cfg, "show", "nosuch"}, 2, `sluice: unknown category "nosuch" (known: ads)` + "\n"},
		{[]string{"list", "-c", cfg, "update", "nosuch"}, 2, `sluice: unknown category "nosuch" (known: ads)` + "\n"},
		{[]string{"list", "-c", cfg, "rm", "ads", "nothere.test"}, 1, ""},
		{[]string{"list", "-c", cfg, "add", "ads", "ads.test"}, 1, ""},
		{[]string{"list", "-c", cfg, "add", "ads", "more.test"}, 0, ""},
		{[]string{"list", "-c", cfg, "rm", "ads", "more.test"}, 0, ""},
		{[]string{"users", "-c", cfg, "rm", "bob"}, 1, `sluice: no user "bob" in ` + users + ": nothing removed\n"},
		{[]string{"allow", "-c", cfg, "--remove", "x.test"}, 1, "sluice: no exception for x.test\n"},
		{[]string{"reload"}, 2, "sluice: name the server: -c FILE (its config, whose pid_file is read) or --pid PID\n" +
			"usage: sluice reload (-c FILE | --pid PID)\n"},
		{[]string{"bogus"}, 2, `sluice: unknown command "bogus" for "sluice" (see 'sluice --help')` + "\n"},
	}
	for _, c := range cases {
		_, stderr, code := runCLISplit(t, dir, c.args...)
		if code != c.code || stderr != c.stderr {
			t.Errorf("sluice %q: exit %d, stderr:\n%q\nwant exit %d, stderr:\n%q", c.args, code, stderr, c.code, c.stderr)
		}
	}
}

// TestDialErrorSaidOnce: the access line's err of a refused dial names the
// target and the reason once, without Go's "dial tcp ...: connect:".
func TestDialErrorSaidOnce(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close() // nothing listens there now: the dial is refused
	p := startSluice(t, "default: allow\n", nil)
	if s := statusOf(t, p, "http://"+closed+"/"); s != "502" {
		t.Fatalf("status %s, want 502", s)
	}
	line := accessLine(t, p, closed)
	if got, want := line["err"], "dial "+closed+": connection refused"; got != want {
		t.Errorf("err = %q, want %q", got, want)
	}
}

// TestAccessLogRouteNamesFailoverMember: the access line's route names the
// member of a failover list that carried the request ("pool/direct"), on
// plain HTTP, CONNECT and SOCKS5 alike, when the first member is down.
func TestAccessLogRouteNamesFailoverMember(t *testing.T) {
	o := newOrigin(t, false)
	cfg := fmt.Sprintf(`default: allow
hosts: {plain.test: 127.0.0.1, tunnel.test: 127.0.0.1, socks.test: 127.0.0.1, direct.test: 127.0.0.1}
upstreams:
  dead: http://127.0.0.1:%s
  pool: {failover: [dead, direct]}
rules:
  - allow: [plain.test, tunnel.test, socks.test]
    via: pool
`, closedPort(t))
	p := startSluice(t, cfg, nil)
	web := func(host string) string { return "http://" + host + ":" + o.port + "/" }
	for _, args := range [][]string{
		{"-x", "http://" + p.addr, web("plain.test")},
		{"-p", "-x", "http://" + p.addr, web("tunnel.test")},
		{"--socks5-hostname", p.addr, web("socks.test")},
		{"-x", "http://" + p.addr, web("direct.test")},
	} {
		if out, code := curl(t, args...); code != 0 || !strings.Contains(out, "hello from origin") {
			t.Fatalf("curl %q: exit %d:\n%s", args, code, out)
		}
	}
	for host, want := range map[string]string{
		"plain.test": "pool/direct", "tunnel.test": "pool/direct", "socks.test": "pool/direct", "direct.test": "direct",
	} {
		line := accessLine(t, p, host+":"+o.port)
		if got := line["route"]; got != want {
			t.Errorf("%s: route %q, want %q", host, got, want)
		}
		if host != "plain.test" && line["peer"] != "127.0.0.1" { // a direct member dialed the origin
			t.Errorf("%s: peer %v, want 127.0.0.1", host, line["peer"])
		}
	}
}
