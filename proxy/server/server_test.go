package server

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice/filter"
)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func writeConfig(t testing.TB, cfg string, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	p := filepath.Join(dir, "sluice.yaml")
	if err := os.WriteFile(p, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func heapAfterGC() uint64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// TestReloadMemoryIsFlat reloads 50 times with 100,000 category domains
// and checks the live heap does not grow from reload to reload: the old
// engine must be garbage once the new one is stored.
func TestReloadMemoryIsFlat(t *testing.T) {
	dir := t.TempDir()
	f, err := os.Create(filepath.Join(dir, "big.txt"))
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriter(f)
	for i := range 100_000 {
		fmt.Fprintf(w, "host%d.example%d.com\n", i, i%97)
	}
	w.Flush()
	f.Close()
	cfg := filepath.Join(dir, "sluice.yaml")
	os.WriteFile(cfg, []byte("categories:\n  big: [big.txt]\nrules:\n  - block: [\"category:big\"]\n"), 0o644)
	s, err := New(Options{Config: cfg, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	var at10 uint64
	for i := 1; i <= 50; i++ {
		if err := s.Reload(); err != nil {
			t.Fatal(err)
		}
		if i == 10 {
			at10 = heapAfterGC()
		}
	}
	at50 := heapAfterGC()
	t.Logf("live heap after 10 reloads: %.1f MiB, after 50: %.1f MiB", float64(at10)/(1<<20), float64(at50)/(1<<20))
	if at50 > at10+at10/4 {
		t.Fatalf("heap grew from %d to %d bytes between reload 10 and 50", at10, at50)
	}
	if d := s.state.Load().engine.Decide(filter.Request{Host: "a.host7.example7.com", Port: 443}); d.Verdict != filter.Block {
		t.Fatalf("after 50 reloads the big category does not block: %+v", d)
	}
}

// TestFailedReloadKeepsState: a broken config leaves the running engine in
// place and reports the error with file and line.
func TestFailedReloadKeepsState(t *testing.T) {
	cfg := writeConfig(t, "rules:\n  - block: [blocked.test]\n", nil)
	s, err := New(Options{Config: cfg, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	before := s.state.Load()
	os.WriteFile(cfg, []byte("rules:\n  - block: [blocked.test]\n  - bogus: 1\n"), 0o644)
	err = s.Reload()
	if err == nil || !strings.Contains(err.Error(), "sluice.yaml:3") {
		t.Fatalf("reload error %v, want one naming sluice.yaml:3", err)
	}
	if s.state.Load() != before {
		t.Fatal("a failed reload replaced the running state")
	}
	if st := s.Status(); st.Failures != 1 || st.LastError == "" {
		t.Fatalf("status after a failed reload: %+v", st)
	}
	if d := before.engine.Decide(filter.Request{Host: "blocked.test", Port: 80}); d.Verdict != filter.Block {
		t.Fatal("old rules lost")
	}
}

// TestOpenProxyRefused: non-loopback listeners need clients or users.
func TestOpenProxyRefused(t *testing.T) {
	for _, c := range []struct {
		cfg  string
		open bool
		ok   bool
	}{
		{"listen: [\"0.0.0.0:3128\"]\n", false, false},
		{"listen: [\"[::]:3128\"]\n", false, false},
		{"listen: [\"0.0.0.0:3128\"]\n", true, true},
		{"listen: [\"0.0.0.0:3128\"]\nclients: [10.0.0.0/8]\n", false, true},
		{"listen: [\"127.0.0.1:3128\", \"[::1]:3128\", \"localhost:3128\"]\n", false, true},
	} {
		_, err := New(Options{Config: writeConfig(t, c.cfg, nil), AllowOpen: c.open, Logger: quietLogger()})
		if (err == nil) != c.ok {
			t.Errorf("%q open=%v: err=%v", c.cfg, c.open, err)
		}
	}
}

// TestReloadCannotOpenTheProxy: removing `clients` from a gateway's config
// is refused on reload, so the running proxy stays closed to strangers.
func TestReloadCannotOpenTheProxy(t *testing.T) {
	cfg := writeConfig(t, "listen: [\"0.0.0.0:3128\"]\nclients: [10.0.0.0/8]\n", nil)
	s, err := New(Options{Config: cfg, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(cfg, []byte("listen: [\"0.0.0.0:3128\"]\n"), 0o644)
	if err := s.Reload(); err == nil || !strings.Contains(err.Error(), "--allow-open") {
		t.Fatalf("reload without clients: err = %v, want a refusal", err)
	}
	if got := s.state.Load().clients; len(got) != 1 {
		t.Fatalf("clients after the refused reload: %v", got)
	}
}

// TestValidateChecksEverythingServeNeeds: a missing users file or tls_ca is
// an error for Validate, as it is for serve, naming the config file and the
// line of the key that names the file.
func TestValidateChecksEverythingServeNeeds(t *testing.T) {
	for _, c := range []struct{ cfg, want string }{
		{"default: allow\nusers: nosuch.htpasswd\n", "sluice.yaml:2: users: "},
		{"default: allow\nusers: nosuch.htpasswd\n", "nosuch.htpasswd"},
		{"default: allow\nupstreams:\n  up:\n    chain: [\"https://127.0.0.1:8443\"]\n    tls_ca: nosuch.pem\n", "sluice.yaml:5: upstream \"up\": tls_ca: "},
		{"default: allow\nupstreams:\n  up: {chain: [\"https://127.0.0.1:8443\"], tls_ca: nosuch.pem}\n", "nosuch.pem"},
		{"rules:\n  - block: [ok.test]\n", ""},
	} {
		_, err := Validate(Options{Config: writeConfig(t, c.cfg, nil)})
		if c.want == "" {
			if err != nil {
				t.Errorf("%q: %v", c.cfg, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: err = %v, want one naming %s", c.cfg, err, c.want)
		}
	}
}

// TestDialBudget: the HTTP front end's cap on one dial grows with the
// longest route, so a configured dial timeout is never cut short.
func TestDialBudget(t *testing.T) {
	cfg := writeConfig(t, "default: allow\ntimeouts: {dial: 30s}\nupstreams:\n  a: http://127.0.0.1:1\n  b: [\"http://127.0.0.1:2\", \"socks5://127.0.0.1:3\"]\n  pool: {failover: [a, b]}\n", nil)
	set, err := Validate(Options{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	// pool tries a (1 hop + origin) then b (2 hops + origin): 5 steps.
	if got := dialBudget(set.Config); got != 150*time.Second {
		t.Fatalf("dialBudget = %v, want 150s", got)
	}
}

// TestReloadKeepsUsers: a reload with the same users file re-reads it in
// place, so the verification cache and failure limits survive.
func TestReloadKeepsUsers(t *testing.T) {
	cfg := writeConfig(t, "default: allow\nusers: users\n", map[string]string{"users": "# none yet\n"})
	s, err := New(Options{Config: cfg, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	before := s.state.Load().users
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	if after := s.state.Load().users; after != before {
		t.Fatal("a reload replaced the users, dropping their cache")
	}
}
