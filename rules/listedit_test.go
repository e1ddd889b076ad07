package rules

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestParseEntry(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"example.com", "example.com"},
		{"  Example.COM.  ", "example.com"},
		{"*.Example.com", "example.com"},
		{".example.com", "example.com"},
		{"https://www.youtube.com/watch?v=dQw4w9WgXcQ&t=42s", "www.youtube.com"},
		{"HTTP://User:secret@WWW.Example.org:8080/a#frag", "www.example.org"},
		{"https://[2001:db8::1]:443/x", "2001:db8::1"},
		{"www.tiktok.com/@someone/video/1", "www.tiktok.com"},
		{"example.net:443", "example.net"},
		{"example.net?q=1", "example.net"},
		{"||ads.example.com^$third-party", "ads.example.com"},
		{"bücher.example", "xn--bcher-kva.example"},
	} {
		got, err := ParseEntry(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseEntry(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
	for _, in := range []string{"", "not a domain", "https://", "https:///path", "*.", "a..b", "0x7f000001", "mailto:x@example.com"} {
		if got, err := ParseEntry(in); err == nil {
			t.Errorf("ParseEntry(%q) = %q, want an error", in, got)
		}
	}
	got, err := ParseEntries([]string{"*.a.example", "A.example", "https://a.example/x", "b.example"})
	if err != nil || !slices.Equal(got, []string{"a.example", "b.example"}) {
		t.Errorf("ParseEntries = %v, %v", got, err)
	}
	if _, err := ParseEntries([]string{"a.example", "x y"}); err == nil || !strings.Contains(err.Error(), `"x y"`) {
		t.Errorf("ParseEntries error = %v", err)
	}
}

func TestAddRemoveCategory(t *testing.T) {
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "sluice.yaml")
	writeFile(t, cfgFile, "categories:\n  ads: [ads.hosts]\nrules:\n  - block: [category:ads]\n")
	writeFile(t, filepath.Join(dir, "ads.hosts"), "0.0.0.0 hosts.example\n")
	cfg, err := LoadConfig(cfgFile)
	if err != nil {
		t.Fatal(err)
	}
	// The hosts file is not edited: a new plain file is made and added.
	res, err := AddToCategory(cfg, "ads", []string{"a.example", "b.example"})
	newFile := filepath.Join(dir, "lists", "ads.txt")
	if err != nil || !res.Created || res.Source != "lists/ads.txt" || res.File != newFile || !slices.Equal(res.Added, []string{"a.example", "b.example"}) {
		t.Fatalf("AddToCategory = %+v, %v", res, err)
	}
	if cfg, err = LoadConfig(cfgFile); err != nil || len(cfg.Categories["ads"]) != 2 {
		t.Fatalf("config after add: %v, %v", cfg, err)
	}
	res, err = AddToCategory(cfg, "ads", []string{"b.example", "c.example"})
	if err != nil || res.Created || res.Source != "" || !slices.Equal(res.Listed, []string{"b.example"}) || !slices.Equal(res.Added, []string{"c.example"}) {
		t.Fatalf("second AddToCategory = %+v, %v", res, err)
	}
	rm, err := RemoveFromCategory(cfg, "ads", []string{"c.example", "hosts.example", "none.example"})
	if err != nil || rm.Lines != 1 || len(rm.Removed) != 1 || rm.Removed[0].Domain != "c.example" || rm.Removed[0].File != newFile {
		t.Fatalf("RemoveFromCategory = %+v, %v", rm, err)
	}
	hostsFrom := filepath.Join(dir, "ads.hosts") + ":1"
	if len(rm.Missing) != 2 || !slices.Equal(rm.Missing[0].From, []string{hostsFrom}) || rm.Missing[1].From != nil {
		t.Errorf("missing = %+v", rm.Missing)
	}
	if data, _ := os.ReadFile(newFile); !strings.HasSuffix(string(data), "a.example\nb.example\n") {
		t.Errorf("list file:\n%s", data)
	}
	if _, err := RemoveFromCategory(cfg, "nope", []string{"a.example"}); err == nil {
		t.Error("RemoveFromCategory on a category without sources: no error")
	}
	if _, err := AddToCategory(cfg, "../etc", []string{"a.example"}); err == nil {
		t.Error("AddToCategory with a bad category name: no error")
	}
}

func TestImportAndRemoteSources(t *testing.T) {
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "sluice.yaml")
	writeFile(t, cfgFile, "categories:\n  b: [https://lists.example/b.txt]\n  a: [https://lists.example/b.txt, a.txt]\ndefault: allow\n")
	writeFile(t, filepath.Join(dir, "a.txt"), "a.example\n")
	writeFile(t, filepath.Join(dir, "sub", "c.txt"), "c.example\n")
	cfg, err := LoadConfig(cfgFile)
	if err != nil {
		t.Fatal(err)
	}
	src, text, added, err := ImportSource(cfg, "a", filepath.Join(dir, "a.txt"))
	if err != nil || added || text != "a.txt" || src.Path != filepath.Join(dir, "a.txt") {
		t.Errorf("import of a present source = %+v %q %v %v", src, text, added, err)
	}
	if _, text, added, err = ImportSource(cfg, "c", filepath.Join(dir, "sub", "c.txt")); err != nil || !added || text != "sub/c.txt" {
		t.Errorf("import = %q %v %v", text, added, err)
	}
	if _, _, _, err = ImportSource(cfg, "c", "ftp://user:secret@lists.example/x"); err == nil || strings.Contains(err.Error(), "secret") {
		t.Errorf("bad URL: %v", err)
	}
	if _, _, _, err = ImportSource(cfg, "c", filepath.Join(dir, "missing.txt")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	got, err := cfg.RemoteSources("")
	if err != nil || len(got) != 1 || got[0].Category != "a" || got[0].Source.URL != "https://lists.example/b.txt" {
		t.Errorf("RemoteSources = %+v, %v", got, err)
	}
	if got, err = cfg.RemoteSources("b"); err != nil || len(got) != 1 || got[0].Category != "b" {
		t.Errorf("RemoteSources(b) = %+v, %v", got, err)
	}
	if _, err = cfg.RemoteSources("zz"); err == nil {
		t.Error("RemoteSources of an unknown category: no error")
	}
}

func FuzzParseEntry(f *testing.F) {
	for _, s := range []string{"example.com", "https://www.youtube.com/watch?v=x", "*.A.example", "||a.example^", "[::1]:80", "a.example:443/x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		h, err := ParseEntry(s)
		if err != nil {
			return
		}
		if n, err := NormalizeHost(h); err != nil || n != h {
			t.Fatalf("ParseEntry(%q) = %q, not normalized", s, h)
		}
	})
}
