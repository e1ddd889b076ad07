//go:build linux

package server

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestFindInodeScansCheaply scans a /proc/net/tcp of 20,000 sockets, the
// host of a busy gateway, for the last one: it must find the right inode,
// tell a line that only contains the pair elsewhere from the real one, and
// allocate a handful of objects per scan, not several per line (main
// allocated about 143,000 per admin request on a loaded test machine).
func TestFindInodeScansCheaply(t *testing.T) {
	const n = 20000
	var b strings.Builder
	b.WriteString("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n")
	line := func(i int, local, remote string, inode int) {
		fmt.Fprintf(&b, "%4d: %s %s 01 00000000:00000000 00:00000000 00000000     0        0 %d 1 0000000000000000 20 4 30 10 -1\n", i, local, remote, inode)
	}
	for i := range n - 1 {
		line(i, fmt.Sprintf("0100007F:%04X", 1024+i%60000), "0100007F:0CEA", 100000+i)
	}
	line(n-1, "0100007F:C350", "0100007F:1F90", 424242)
	// A long line (longer than the reader's buffer) must be skipped whole.
	b.WriteString(strings.Repeat("x", 100<<10) + " 0100007F:C351 0100007F:1F90 \n")
	path := filepath.Join(t.TempDir(), "tcp")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ local, remote, want string }{
		{"0100007F:C350", "0100007F:1F90", "424242"},
		{"0100007F:0400", "0100007F:0CEA", "100000"},
		{"0100007F:C351", "0100007F:1F90", ""}, // only inside the long line
		{"0100007F:1F90", "0100007F:C350", ""}, // the pair reversed
	} {
		got, err := findInode(path, c.local, c.remote)
		if err != nil || got != c.want {
			t.Errorf("findInode(%s, %s) = %q, %v; want %q", c.local, c.remote, got, err, c.want)
		}
	}
	allocs := testing.AllocsPerRun(5, func() {
		if got, err := findInode(path, "0100007F:C350", "0100007F:1F90"); got != "424242" || err != nil {
			t.Fatalf("findInode = %q, %v", got, err)
		}
	})
	if allocs > 20 {
		t.Errorf("a scan of %d lines made %.0f allocations; want at most 20", n, allocs)
	}
}
