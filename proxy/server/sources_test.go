package server

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluiceproxy/sluice/filter"
	"github.com/sluiceproxy/sluice/rules"
)

func decide(s *Server, host string) filter.Verdict {
	return s.state.Load().engine.Decide(filter.Request{Host: host, Port: 443}).Verdict
}

// TestNewRefusesUnusableSources: New refuses a source that a rule uses and
// that is missing, empty or a UT1 folder without domains, naming the config
// file and line; the same source marked optional starts, without entries.
func TestNewRefusesUnusableSources(t *testing.T) {
	for _, c := range []struct {
		name, cfg string
		files     map[string]string
		line      int
	}{
		{"missing", "categories:\n  bad: [nosuch.txt]\nrules:\n  - block: category:bad\n", nil, 2},
		{"empty", "categories:\n  bad: [bad.txt]\nrules:\n  - block: category:bad\n", map[string]string{"bad.txt": ""}, 2},
		{"ut1 without domains", "category_dirs:\n  - path: ut1\n    only: [adult]\nrules:\n  - block: category:adult\n",
			map[string]string{"ut1/adult/urls": "adult.example/x\n"}, 2},
	} {
		_, err := New(Options{Config: writeConfig(t, c.cfg, c.files), Logger: quietLogger()})
		var pe *rules.ParseError
		if !errors.As(err, &pe) || !strings.HasSuffix(pe.File, "sluice.yaml") || pe.Line != c.line {
			t.Errorf("%s: err = %v, want sluice.yaml:%d", c.name, err, c.line)
		}
	}
	cfg := "categories:\n  bad: [{file: nosuch.txt, optional: true}]\nrules:\n  - block: category:bad\n"
	s, err := New(Options{Config: writeConfig(t, cfg, nil), Logger: quietLogger()})
	if err != nil {
		t.Fatalf("optional source: %v", err)
	}
	if decide(s, "x.example") != filter.Allow {
		t.Error("an empty optional category blocks")
	}
}

// TestReloadKeepsLastGoodList: a reload whose list became empty, garbage,
// deleted or a folder keeps blocking its entries; a reload whose config
// became empty or comments-only is refused and keeps the running rules.
func TestReloadKeepsLastGoodList(t *testing.T) {
	cfg := writeConfig(t, "categories:\n  bad: [lists/bad.txt]\nrules:\n  - block: category:bad\n",
		map[string]string{"lists/bad.txt": "blocked.example\n"})
	list := filepath.Join(filepath.Dir(cfg), "lists", "bad.txt")
	s, err := New(Options{Config: cfg, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range []struct {
		name  string
		apply func()
	}{
		{"emptied", func() { os.WriteFile(list, nil, 0o644) }},
		{"garbage", func() { os.WriteFile(list, []byte(strings.Repeat("<div>oops</div>\n", 1200)), 0o644) }},
		{"deleted", func() { os.Remove(list) }},
		{"folder", func() { os.Remove(list); os.Mkdir(list, 0o755) }},
	} {
		b.apply()
		if err := s.Reload(); err != nil {
			t.Fatalf("%s: reload: %v", b.name, err)
		}
		if decide(s, "www.blocked.example") != filter.Block {
			t.Errorf("%s: blocked.example is no longer blocked", b.name)
		}
		os.RemoveAll(list)
	}
	os.WriteFile(list, []byte("blocked.example\n"), 0o644)
	for _, empty := range []string{"", "# being rewritten\n", "categories:\n  bad: [lists/bad.txt]\n"} {
		os.WriteFile(cfg, []byte(empty), 0o644)
		err := s.Reload()
		if err == nil || !strings.Contains(err.Error(), "sluice.yaml") {
			t.Errorf("config %q: reload err = %v, want a refusal naming the file", empty, err)
		}
		if decide(s, "blocked.example") != filter.Block {
			t.Errorf("config %q: blocked.example is no longer blocked", empty)
		}
	}
	if st := s.Status(); !strings.Contains(st.LastError, "no `rules`, `default` or `listen`") {
		t.Errorf("Status().LastError = %q", st.LastError)
	}
}

// TestNewFetchesMissingRemoteSource: New downloads a remote source that a
// rule uses and that has no copy, and refuses to start when it cannot.
func TestNewFetchesMissingRemoteSource(t *testing.T) {
	ls := newListServer(t)
	conf := fmt.Sprintf("categories:\n  ads: [%s/list.txt]\nrules:\n  - block: category:ads\n", ls.URL)
	s, err := New(Options{Config: writeConfig(t, conf, nil), Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if n := s.Status().Categories["ads"]; n == 0 || ls.requests.Load() != 1 {
		t.Fatalf("ads has %d entries after %d requests; want the list fetched before New returns", n, ls.requests.Load())
	}
	ls.set(httpStatus(http.StatusBadGateway))
	_, err = New(Options{Config: writeConfig(t, conf, nil), Logger: quietLogger()})
	var pe *rules.ParseError
	if !errors.As(err, &pe) || pe.Line != 2 || !errors.Is(err, rules.ErrNotDownloaded) {
		t.Fatalf("list server failing: err = %v, want sluice.yaml:2 not downloaded", err)
	}
}
