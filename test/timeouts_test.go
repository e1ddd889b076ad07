package test

import (
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestTimeoutsApplyAfterReload: after a reload, new connections get the
// new handshake timeout (the HTTP server used to keep its start-up value)
// and the new lifetime, while a tunnel opened before keeps going.
func TestTimeoutsApplyAfterReload(t *testing.T) {
	echo := newLineEcho(t, false)
	p := startSluice(t, "timeouts: {handshake: 2m}\n", nil)
	target := "127.0.0.1:" + strconv.Itoa(echo.port)
	old, obr := httpConnect(t, p.addr, target)

	cfg := "listen: [\"127.0.0.1:0\"]\ntimeouts: {handshake: 1s, lifetime: 5s}\n"
	if err := os.WriteFile(filepath.Join(p.dir, "sluice.yaml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	before := strings.Count(p.Log(), "rules reloaded")
	if out, code := runCLI(t, p.dir, "reload", "-c", "sluice.yaml"); code != 0 {
		t.Fatalf("reload: exit %d: %s", code, out)
	}
	eventually(t, "the reload", func() bool { return strings.Count(p.Log(), "rules reloaded") > before })

	// A request whose headers never end is dropped after the new 1s.
	c, err := net.DialTimeout("tcp", p.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET http://"+target+"/ HTTP/1.1\r\nHost: "+target+"\r\n")
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.ReadAll(c); isTimeout(err) {
		t.Fatal("unfinished request headers not dropped: the handshake timeout of the reload does not apply")
	}

	// A tunnel opened now is closed after the new lifetime ...
	nc, nbr := httpConnect(t, p.addr, target)
	if e := echoLine(nc, nbr, "young"); e != "" {
		t.Fatalf("new tunnel: %s", e)
	}
	nc.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := nbr.ReadByte(); err == nil || isTimeout(err) {
		t.Fatalf("tunnel opened after the reload: %v, want closed after timeouts.lifetime", err)
	}
	// ... while the one opened before the reload, now older, goes on.
	if e := echoLine(old, obr, "old"); e != "" {
		t.Fatalf("tunnel opened before the reload: %s", e)
	}
}
