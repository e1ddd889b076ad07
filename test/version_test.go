package test

import (
	"net"
	"regexp"
	"strings"
	"testing"
)

// TestNoVersionInAnswers: the block page, the 407 and an error body name
// no version (the test binary is "dev"; a released one "1.2.3") unless
// block_page: {show_version: true}, which shows it on the block page.
func TestNoVersionInAnswers(t *testing.T) {
	t.Parallel()
	users := htpasswdFile(t, "alice", "wonderland")
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := closed.Addr().String()
	closed.Close()
	version := regexp.MustCompile(`\bdev\b|\d+\.\d+\.\d+|(?i)version`)
	for _, show := range []bool{false, true} {
		cfg := "default: block\nusers: " + users + "\nrules:\n  - allow: [127.0.0.1]\n"
		if show {
			cfg += "block_page: {show_version: true}\n"
		}
		p := startSluice(t, cfg, nil)
		proxy := "http://" + p.addr
		page, _ := curl(t, "-i", "-x", proxy, "-U", "alice:wonderland", "http://blocked.test/")
		auth, _ := curl(t, "-i", "-x", proxy, "http://blocked.test/")
		fail, _ := curl(t, "-i", "-x", proxy, "-U", "alice:wonderland", "http://"+dead+"/")
		if !strings.Contains(page, " 403") || !strings.Contains(auth, " 407") || !strings.Contains(fail, " 502") {
			t.Fatalf("show_version %v: want 403, 407, 502:\n%s\n%s\n%s", show, page, auth, fail)
		}
		for name, ans := range map[string]string{"407": auth, "502": fail} {
			_, body, _ := strings.Cut(ans, "\r\n\r\n")
			body = strings.ReplaceAll(body, dead, "ADDR")
			if m := version.FindString(body); m != "" {
				t.Errorf("show_version %v: the %s answer shows %q:\n%s", show, name, m, body)
			}
		}
		_, body, _ := strings.Cut(page, "\r\n\r\n")
		body = strings.ReplaceAll(body, "127.0.0.1", "CLIENT")
		if show {
			if !strings.Contains(body, "<small>sluice dev</small>") {
				t.Errorf("show_version: true: the block page lacks the version:\n%s", body)
			}
		} else if m := version.FindString(body); m != "" {
			t.Errorf("the block page shows %q:\n%s", m, body)
		}
	}
}
