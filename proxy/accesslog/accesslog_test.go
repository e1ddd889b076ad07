package accesslog

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

var start = time.Unix(1700000000, 7_000_000) // .007

func TestSquidFields(t *testing.T) {
	for _, tt := range []struct {
		name string
		r    Record
		want string
	}{
		{"plain allowed", Record{Start: start, Duration: 1234 * time.Millisecond, Client: "127.0.0.1:5000", Proto: "http", Method: "GET",
			Target: "example.test:80", Scheme: "http", Path: "/a/b", Decided: true, Verdict: "allow", Route: "direct", Status: 200,
			Reply: -1, Down: 512, Peer: netip.MustParseAddr("127.0.0.9"), ContentType: "text/html; charset=utf-8"},
			"1700000000.007   1234 127.0.0.1 TCP_MISS/200 512 GET http://example.test/a/b - HIER_DIRECT/127.0.0.9 text/html"},
		{"plain other port, parent", Record{Start: start, Client: "[::ffff:10.1.2.3]:5000", Proto: "http", Method: "POST",
			Target: "example.test:8080", Scheme: "http", Path: "/", User: "alice", Decided: true, Verdict: "allow", Route: "office", Status: 502, Reply: -1},
			"1700000000.007      0 10.1.2.3 TCP_MISS/502 0 POST http://example.test:8080/ alice FIRSTUP_PARENT/office -"},
		{"failover member, parent", Record{Start: start, Client: "127.0.0.1:1", Proto: "http", Method: "CONNECT", Target: "example.test:443",
			Decided: true, Verdict: "allow", Route: "pool/office", Status: 200, Reply: -1, Down: 10},
			"1700000000.007      0 127.0.0.1 TCP_TUNNEL/200 10 CONNECT example.test:443 - FIRSTUP_PARENT/office -"},
		{"failover member, direct", Record{Start: start, Client: "127.0.0.1:1", Proto: "http", Method: "CONNECT", Target: "example.test:443",
			Decided: true, Verdict: "allow", Route: "pool/direct", Status: 200, Reply: -1, Down: 10, Peer: netip.MustParseAddr("127.0.0.9")},
			"1700000000.007      0 127.0.0.1 TCP_TUNNEL/200 10 CONNECT example.test:443 - HIER_DIRECT/127.0.0.9 -"},
		{"plain denied", Record{Start: start, Client: "127.0.0.1:1", Proto: "http", Method: "GET", Target: "ads.test:80", Scheme: "http", Path: "/x",
			Decided: true, Verdict: "block", Status: 403, Reply: -1, Down: 100, ContentType: "text/html"},
			"1700000000.007      0 127.0.0.1 TCP_DENIED/403 100 GET http://ads.test/x - HIER_NONE/- text/html"},
		{"connect", Record{Start: start, Client: "127.0.0.1:1", Proto: "http", Method: "CONNECT", Target: "example.test:443",
			Decided: true, Verdict: "allow", Route: "direct", Status: 200, Reply: -1, Up: 10, Down: 4000, Peer: netip.MustParseAddr("::1")},
			"1700000000.007      0 127.0.0.1 TCP_TUNNEL/200 4000 CONNECT example.test:443 - HIER_DIRECT/::1 -"},
		{"proxy auth", Record{Start: start, Client: "127.0.0.1:1", Proto: "http", Method: "CONNECT", Target: "example.test:443",
			User: "mallory", Reason: "bad proxy credentials", Status: 407, Reply: -1},
			"1700000000.007      0 127.0.0.1 TCP_DENIED/407 0 CONNECT example.test:443 mallory HIER_NONE/- -"},
		{"not a proxy request", Record{Start: start, Client: "127.0.0.1:1", Proto: "http", Method: "GET", Reason: "not a proxy request", Status: 400, Reply: -1},
			"1700000000.007      0 127.0.0.1 NONE/400 0 GET - - HIER_NONE/- -"},
		{"socks granted", Record{Start: start, Client: "127.0.0.1:1", Proto: "socks5", Cmd: "connect", Target: "example.test:22",
			Decided: true, Verdict: "allow", Route: "direct", Reply: 0, Granted: true, Down: 77, Peer: netip.MustParseAddr("127.0.0.1")},
			"1700000000.007      0 127.0.0.1 TCP_TUNNEL/200 77 CONNECT example.test:22 - HIER_DIRECT/127.0.0.1 -"},
		{"socks blocked", Record{Start: start, Client: "127.0.0.1:1", Proto: "socks4a", Cmd: "connect", Target: "ads.test:443",
			Decided: true, Verdict: "block", Reply: 0x5b},
			"1700000000.007      0 127.0.0.1 TCP_DENIED/403 0 CONNECT ads.test:443 - HIER_NONE/- -"},
		{"socks dial failed", Record{Start: start, Client: "127.0.0.1:1", Proto: "socks5", Cmd: "connect", Target: "down.test:80",
			Decided: true, Verdict: "allow", Route: "direct", Reply: 5, Err: errors.New("refused")},
			"1700000000.007      0 127.0.0.1 TCP_TUNNEL/503 0 CONNECT down.test:80 - HIER_NONE/- -"},
		{"socks auth", Record{Start: start, Client: "127.0.0.1:1", Proto: "socks5", User: "bob", Status: 407, Reply: -1},
			"1700000000.007      0 127.0.0.1 TCP_DENIED/407 0 CONNECT - bob HIER_NONE/- -"},
		{"socks udp", Record{Start: start, Client: "127.0.0.1:1", Proto: "socks5", Cmd: "udp", Target: "127.0.0.1:4000",
			Reply: 0, Granted: true},
			"1700000000.007      0 127.0.0.1 NONE/200 0 UDP_ASSOCIATE 127.0.0.1:4000 - HIER_NONE/- -"},
		{"spaces and percent never shift fields", Record{Start: start, Client: "127.0.0.1:1", Proto: "http", Method: "GET", Target: "a.test:80",
			Scheme: "http", Path: "/%20x", User: "eve smith\t%", Decided: true, Verdict: "allow", Route: "up stream", Status: 200, Reply: -1, ContentType: "a b/c"},
			"1700000000.007      0 127.0.0.1 TCP_MISS/200 0 GET http://a.test/%2520x eve%20smith%09%25 FIRSTUP_PARENT/up%20stream a%20b/c"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := Squid(&tt.r)
			if got != tt.want {
				t.Errorf("\n got %q\nwant %q", got, tt.want)
			}
			if f := strings.Fields(got); len(f) != 10 {
				t.Errorf("%d fields, want 10: %q", len(f), got)
			}
		})
	}
}

func TestJSONFields(t *testing.T) {
	var buf bytes.Buffer
	LogJSON(slog.New(slog.NewJSONHandler(&buf, nil)), &Record{ID: "r1", Start: start, Client: "127.0.0.1:9", Proto: "http", Method: "GET",
		Target: "a.test:80", Scheme: "http", Path: "/p", Decided: true, Verdict: "allow", Reason: "default", Rule: "default", Route: "direct",
		Status: 200, Reply: -1, Up: 1, Down: 2, Peer: netip.MustParseAddr("127.0.0.1"), Duration: time.Second})
	var m map[string]any
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]any{"msg": "access", "request_id": "r1", "client": "127.0.0.1:9", "proto": "http", "method": "GET",
		"target": "a.test:80", "path": "/p", "verdict": "allow", "route": "direct", "status": 200.0, "up": 1.0, "down": 2.0,
		"peer": "127.0.0.1", "dur": 1e9} {
		if m[k] != v {
			t.Errorf("%s = %v, want %v", k, m[k], v)
		}
	}
	if _, ok := m["id"]; ok {
		t.Error("the old id field is back: one name, request_id")
	}
}

func TestFileReopenAfterRename(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "access.log")
	l, err := Open(path, FormatSquid, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o640 {
		t.Fatalf("mode %v, %v; want 0640", fi.Mode(), err)
	}
	rec := func(target string) *Record {
		return &Record{Start: start, Client: "127.0.0.1:1", Proto: "http", Method: "CONNECT", Target: target, Reply: -1}
	}
	l.Write(rec("one.test:443"))
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	l.Write(rec("two.test:443")) // still the renamed file, as with Squid
	if err := l.Reopen(); err != nil {
		t.Fatal(err)
	}
	l.Write(rec("three.test:443"))
	old, _ := os.ReadFile(path + ".1")
	cur := eventually(t, path, "three.test")
	if !strings.Contains(string(old), "one.test") || !strings.Contains(string(old), "two.test") || strings.Contains(string(old), "three.test") {
		t.Errorf("rotated file:\n%s", old)
	}
	if strings.Count(string(cur), "\n") != 1 || !strings.Contains(string(cur), "three.test") {
		t.Errorf("new file:\n%s", cur)
	}
	if err := l.Configure(filepath.Join(dir, "missing", "x.log"), FormatJSON, 0); err == nil {
		t.Error("a file in a missing folder was accepted")
	}
	l.Write(rec("four.test:443")) // the failed Configure kept the file and the format
	cur = eventually(t, path, "four.test")
	if !strings.Contains(string(cur), "\n1700000000.007") || !strings.Contains(string(cur), "four.test") {
		t.Errorf("after a failed Configure:\n%s", cur)
	}
	if err := l.Configure(path, "apache", 0); err == nil {
		t.Error("an unknown format was accepted")
	}
}

// eventually returns path's content once it holds want (lines are
// buffered for up to DefaultFlush), or what it holds after 10 s.
func eventually(t *testing.T, path, want string) []byte {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(path)
		if strings.Contains(string(b), want) || time.Now().After(deadline) {
			return b
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestFileLinesBuffered: lines to a file wait in the buffer (here for an
// hour) rather than costing a write(2) each; Reopen writes them to the old
// file, Close to the current one, every line whole and in its writer's
// order, none lost; a line longer than the buffer goes out whole too.
func TestFileLinesBuffered(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "access.log")
	l := New(nil, nil)
	if err := l.Configure(path, FormatSquid, time.Hour); err != nil {
		t.Fatal(err)
	}
	const writers, each = 8, 500
	rec := func(w, i int) *Record {
		return &Record{Start: start, Client: "127.0.0.1:1", Proto: "http", Method: "CONNECT",
			Target: fmt.Sprintf("w%d-%d.test:443", w, i), Reply: -1}
	}
	write := func() {
		var wg sync.WaitGroup
		for w := range writers {
			wg.Go(func() {
				for i := range each {
					l.Write(rec(w, i))
				}
			})
		}
		wg.Wait()
	}
	check := func(name string, b []byte) {
		t.Helper()
		lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
		if len(lines) != writers*each {
			t.Fatalf("%s: %d lines, want %d", name, len(lines), writers*each)
		}
		next := make([]int, writers)
		for _, line := range lines {
			var w, i int
			f := strings.Fields(line)
			if len(f) != 10 {
				t.Fatalf("%s: a line cut or merged: %q", name, line)
			}
			if _, err := fmt.Sscanf(f[6], "w%d-%d.test:443", &w, &i); err != nil || w >= writers || i != next[w] {
				t.Fatalf("%s: line %q out of order (want w%d-%d)", name, line, w, next[w])
			}
			next[w]++
		}
	}
	l.Write(rec(0, 0))
	if b, _ := os.ReadFile(path); len(b) != 0 {
		t.Fatalf("a line was written at once, not buffered: %q", b)
	}
	l.Reopen() // same file: what was buffered goes out first
	if b, _ := os.ReadFile(path); strings.Count(string(b), "\n") != 1 {
		t.Fatalf("after Reopen: %q", b)
	}
	os.Truncate(path, 0)
	write()
	os.Rename(path, path+".1")
	if err := l.Reopen(); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path + ".1")
	check("rotated", b)
	write()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(path)
	check("closed", b)

	// A line longer than the buffer, after a short one.
	l, err := Open(path, FormatSquid, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	l.Write(rec(0, 0))
	l.Write(&Record{Start: start, Client: "127.0.0.1:1", Proto: "http", Method: "GET", Reply: -1,
		Target: "http://long.test/" + strings.Repeat("x", 2*bufSize)})
	l.Close()
	b, _ = os.ReadFile(path)
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(lines) != writers*each+2 || !strings.Contains(lines[len(lines)-2], "w0-0.test") ||
		len(strings.Fields(lines[len(lines)-1])) != 10 || !strings.Contains(lines[len(lines)-1], strings.Repeat("x", 2*bufSize)) {
		t.Fatalf("long line: %d lines, last %.80q", len(lines), lines[len(lines)-1])
	}
}
