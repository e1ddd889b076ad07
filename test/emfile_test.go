package test

import (
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestAcceptSurvivesEMFILE runs sluice with an open files limit of 64
// (soft and hard, so that raising the soft limit cannot help), exhausts its
// descriptors with idle connections, and checks that it logs the episode
// once, not once per attempt, and serves again once the connections close.
func TestAcceptSurvivesEMFILE(t *testing.T) {
	o := newOrigin(t, false)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "sluice.yaml")
	writeFiles(t, dir, map[string]string{"sluice.yaml": "listen: [\"127.0.0.1:0\"]\ntimeouts: {handshake: 5m}\n"})
	sh := requireTool(t, "sh")
	p := runProgram(t, dir, sh, "-c", `ulimit -n 64 && exec "$@"`, "sh", sluiceBin, "serve", "--config", cfg, "--debug")
	p.waitLog(t, `open files limit.*"nofile":64`)

	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range 100 { // more than 64: the last ones wait in the listen backlog
		c, err := net.DialTimeout("tcp", p.addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	p.waitLog(t, `out of file descriptors`)
	eventually(t, "several accept retries", func() bool { return strings.Count(p.Log(), `"accept retry"`) >= 3 })
	if n := strings.Count(p.Log(), "accept failed"); n != 1 {
		t.Fatalf("%d error lines for one episode of EMFILE, want 1; log:\n%s", n, p.Log())
	}

	for _, c := range conns {
		c.Close()
	}
	conns = nil
	eventually(t, "serving again once descriptors are free", func() bool {
		out, code := curl(t, "-x", "http://"+p.addr, o.URL+"/")
		return code == 0 && strings.Contains(out, "hello from origin")
	})
	p.waitLog(t, `accept works again`)
}
