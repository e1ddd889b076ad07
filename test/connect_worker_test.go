package test

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

// TestConnectAuthDanceOneConnection: curl asks for a tunnel without
// credentials (--proxy-anyauth), gets 407 with a challenge, and asks again
// with them on the same connection, which then carries the tunnel. A
// CONNECT is served on the accepting worker, not by the HTTP server: its
// refusal must still be a complete keep-alive response. Both access lines
// name the same client port: one connection.
func TestConnectAuthDanceOneConnection(t *testing.T) {
	o := newOrigin(t, false)
	users := htpasswdFile(t, "alice", "pw")
	p := startSluice(t, "default: allow\nusers: "+users+"\naccess_log: access.json\nsniff: off\n", nil)
	out, code := curl(t, "-v", "-p", "--proxy-anyauth", "--proxy-user", "alice:pw", "-x", "http://"+p.addr, o.URL+"/x")
	if code != 0 || !strings.Contains(out, "hello from origin") {
		t.Fatalf("curl exit %d:\n%s", code, out)
	}
	if !strings.Contains(out, "407") {
		t.Fatalf("curl did not see the 407 challenge:\n%s", out)
	}
	lines := waitLines(t, filepath.Join(p.dir, "access.json"), 2)
	var clients []string
	var statuses []float64
	for _, l := range lines {
		var e map[string]any
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("not JSON: %q", l)
		}
		c, _ := e["client"].(string)
		s, _ := e["status"].(float64)
		clients, statuses = append(clients, c), append(statuses, s)
	}
	if len(lines) != 2 || statuses[0] != 407 || statuses[1] != 200 || clients[0] == "" || clients[0] != clients[1] {
		t.Errorf("want a 407 and a 200 from one client port, got statuses %v clients %v\n%s", statuses, clients, strings.Join(lines, "\n"))
	}
}
