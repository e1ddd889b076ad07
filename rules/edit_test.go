package rules

import (
	"os"
	"path/filepath"
	"testing"
)

func readString(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f.txt")
	for _, data := range []string{"one\n", "two\n"} {
		if err := WriteFileAtomic(path, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		if got := readString(t, path); got != data {
			t.Errorf("content = %q, want %q", got, data)
		}
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode = %v", fi.Mode())
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("temporary files left: %v", ents)
	}
	if err := WriteFileAtomic(filepath.Join(dir, "no", "such", "dir"), nil, 0o644); err == nil {
		t.Error("write into a missing folder: no error")
	}
}

func TestAddRemoveDomains(t *testing.T) {
	tests := []struct {
		name, before string
		add          []string
		added        int
		afterAdd     string
		remove       []string
		removed      int
		afterRemove  string
	}{
		{
			name:        "comments kept",
			before:      "# Social networks\nfacebook.com   # the big one\n\n# more\ntwitter.com\n",
			add:         []string{"TikTok.com.", "facebook.com", "tiktok.com", "bücher.example"},
			added:       2,
			afterAdd:    "# Social networks\nfacebook.com   # the big one\n\n# more\ntwitter.com\ntiktok.com\nxn--bcher-kva.example\n",
			remove:      []string{"FACEBOOK.com", "bücher.example", "absent.example", "com"},
			removed:     2,
			afterRemove: "# Social networks\n\n# more\ntwitter.com\ntiktok.com\n",
		},
		{
			name:        "CRLF and no final newline",
			before:      "a.example\r\n# c\r\nb.example",
			add:         []string{"c.example"},
			added:       1,
			afterAdd:    "a.example\r\n# c\r\nb.example\r\nc.example\r\n",
			remove:      []string{"b.example"},
			removed:     1,
			afterRemove: "a.example\r\n# c\r\nc.example\r\n",
		},
		{
			name:        "new file",
			add:         []string{"a.example", "a.example"},
			added:       1,
			afterAdd:    "a.example\n",
			remove:      []string{"a.example"},
			removed:     1,
			afterRemove: "",
		},
		{
			name:        "subdomains are separate entries",
			before:      "example.com\nwww.example.com\n",
			add:         []string{"www.example.com"},
			afterAdd:    "example.com\nwww.example.com\n",
			remove:      []string{"example.com"},
			removed:     1,
			afterRemove: "www.example.com\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "list.txt")
			if tt.before != "" {
				writeFile(t, path, tt.before)
			}
			n, err := AddDomains(path, tt.add)
			if err != nil || n != tt.added {
				t.Fatalf("AddDomains = %d, %v; want %d", n, err, tt.added)
			}
			if got := readString(t, path); got != tt.afterAdd && !(tt.added == 0 && tt.before == got) {
				t.Errorf("after add:\n%q\nwant\n%q", got, tt.afterAdd)
			}
			n, err = RemoveDomains(path, tt.remove)
			if err != nil || n != tt.removed {
				t.Fatalf("RemoveDomains = %d, %v; want %d", n, err, tt.removed)
			}
			if got := readString(t, path); got != tt.afterRemove {
				t.Errorf("after remove:\n%q\nwant\n%q", got, tt.afterRemove)
			}
		})
	}
	path := filepath.Join(t.TempDir(), "list.txt")
	if _, err := AddDomains(path, []string{"ok.example", "not valid"}); err == nil {
		t.Error("AddDomains with an invalid domain: no error")
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Error("AddDomains wrote a file despite an invalid domain")
	}
	if n, err := RemoveDomains(path, []string{"a.example"}); n != 0 || err != nil {
		t.Errorf("RemoveDomains on a missing file = %d, %v", n, err)
	}
}

func TestAddCategorySource(t *testing.T) {
	tests := []struct {
		name, before, cat, src, after string
	}{
		{
			name:   "new category among others",
			before: "# Sluice config\nlisten: 127.0.0.1:3128   # loopback\n\ncategories:\n  # social media\n  social: [lists/social.txt]  # big\n  ads:\n    - lists/ads.txt\n    # a comment in the list\n    - {url: \"https://x.example/l\", refresh: 1h}\n\n# The rules\nrules:\n  - block: [category:social]\n",
			cat:    "news", src: "lists/news.txt",
			after: "# Sluice config\nlisten: 127.0.0.1:3128   # loopback\n\ncategories:\n  # social media\n  social: [lists/social.txt]  # big\n  ads:\n    - lists/ads.txt\n    # a comment in the list\n    - {url: \"https://x.example/l\", refresh: 1h}\n  news: [lists/news.txt]\n\n# The rules\nrules:\n  - block: [category:social]\n",
		},
		{
			name:   "append to a flow list, keeping its comment",
			before: "categories:\n  social: [lists/social.txt]  # big\n  ads: [a.txt]\n",
			cat:    "social", src: "https://lists.example/s.txt",
			after: "categories:\n  social: [lists/social.txt, \"https://lists.example/s.txt\"] # big\n  ads: [a.txt]\n",
		},
		{
			name:   "append to a block list",
			before: "categories:\n  ads:\n    - lists/ads.txt\n    - url: https://x.example/l\n      refresh: 1h\n  # next\n  social: [s.txt]\nrules: []\n",
			cat:    "ads", src: "lists/more ads.txt",
			after: "categories:\n  ads:\n    - lists/ads.txt\n    - url: https://x.example/l\n      refresh: 1h\n    - \"lists/more ads.txt\"\n  # next\n  social: [s.txt]\nrules: []\n",
		},
		{
			name:   "scalar becomes a list",
			before: "categories:\n  ads: a.txt\n",
			cat:    "ads", src: "b.txt",
			after: "categories:\n  ads: [a.txt, b.txt]\n",
		},
		{
			name:   "empty category",
			before: "categories:\n  ads:\n  social: [s.txt]\n",
			cat:    "ads", src: "b.txt",
			after: "categories:\n  ads: [b.txt]\n  social: [s.txt]\n",
		},
		{
			name:   "no categories section",
			before: "# only a comment\nlisten: 127.0.0.1:3128",
			cat:    "ads", src: "ads.txt",
			after: "# only a comment\nlisten: 127.0.0.1:3128\ncategories:\n  ads: [ads.txt]\n",
		},
		{
			name:   "empty categories section",
			before: "categories:\n# end\n",
			cat:    "ads", src: "ads.txt",
			after: "categories:\n  ads: [ads.txt]\n# end\n",
		},
		{
			name:   "empty file",
			before: "",
			cat:    "ads", src: "ads.txt",
			after: "categories:\n  ads: [ads.txt]\n",
		},
		{
			name:   "already there",
			before: "categories:\n  ads: [ads.txt]   # keep\n",
			cat:    "ads", src: "ads.txt",
			after: "categories:\n  ads: [ads.txt]   # keep\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "sluice.yaml")
			writeFile(t, path, tt.before)
			if err := AddCategorySource(path, tt.cat, tt.src); err != nil {
				t.Fatal(err)
			}
			if got := readString(t, path); got != tt.after {
				t.Errorf("got\n%s\nwant\n%s", got, tt.after)
			}
			// A config needs rules, default or listen to load at all.
			cfg, err := Parse(path, []byte(readString(t, path)+"\ndefault: allow\n"))
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for _, s := range cfg.Categories[tt.cat] {
				found = found || s.URL == tt.src || s.Path == filepath.Join(filepath.Dir(path), tt.src)
			}
			if !found {
				t.Errorf("source %q not in %v", tt.src, cfg.Categories[tt.cat])
			}
		})
	}
	path := filepath.Join(t.TempDir(), "sluice.yaml")
	writeFile(t, path, "categories: [\n")
	if err := AddCategorySource(path, "ads", "a.txt"); err == nil {
		t.Error("broken YAML: no error")
	}
	if err := AddCategorySource(path, "a b", "a.txt"); err == nil {
		t.Error("bad category name: no error")
	}
}
