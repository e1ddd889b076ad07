package rules

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestSourceErrors: every unusable source a rule depends on is an error
// naming the config file and the source's line, unless it is optional; a
// source no rule uses, or an optional one, is not.
func TestSourceErrors(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "lists", "good.txt"), "good.example\n")
	writeFile(t, filepath.Join(dir, "lists", "empty.txt"), "")
	writeFile(t, filepath.Join(dir, "lists", "comments.txt"), "# nothing yet\n\n")
	writeFile(t, filepath.Join(dir, "lists", "garbage.txt"), "<html><body>502 Bad Gateway</body></html>\n")
	writeFile(t, filepath.Join(dir, "ut1", "adult", "urls"), "adult.example/x\n") // no domains file
	writeFile(t, filepath.Join(dir, "ut1", "games", "domains"), "game.example\n")
	cfgPath := filepath.Join(dir, "sluice.yaml")
	writeFile(t, cfgPath, dedent(`
		categories:
		  good: [lists/good.txt]
		  missing: [lists/missing.txt]
		  empty: [lists/empty.txt]
		  comments: [lists/comments.txt]
		  garbage: [lists/garbage.txt]
		  folder: [lists/nodir]
		  remote: [https://lists.example.org/r.txt]
		  maybe:
		    - {file: lists/missing.txt, optional: true}
		    - {url: "https://lists.example.org/m.txt", optional: true}
		  unused: [lists/missing.txt]
		category_dirs:
		  - path: ut1
		rules:
		  - block: [category:good, category:missing, category:empty, category:comments, category:garbage]
		  - block: [category:folder, category:remote, category:maybe, category:adult, category:games]
	`))
	set, err := Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	errs := set.SourceErrors()
	want := map[string]int{ // category -> config line of the source
		"missing": 3, "empty": 4, "comments": 5, "garbage": 6, "folder": 7, "remote": 8, "adult": 14,
	}
	got := map[string]int{}
	for _, e := range errs {
		var pe *ParseError
		var se *SourceError
		if !errors.As(e, &pe) || !errors.As(e, &se) || pe.File != cfgPath {
			t.Fatalf("%v: not a ParseError naming %s with a SourceError", e, cfgPath)
		}
		got[se.Category] = pe.Line
		if !strings.HasPrefix(e.Error(), cfgPath+":") || !strings.Contains(e.Error(), "optional: true") {
			t.Errorf("error text %q", e)
		}
	}
	if len(got) != len(want) {
		t.Errorf("errors for %v, want %v:\n%v", got, want, errs)
	}
	for cat, line := range want {
		if got[cat] != line {
			t.Errorf("category %s: line %d, want %d", cat, got[cat], line)
		}
	}
	if !errors.Is(errs[slices.IndexFunc(errs, func(e error) bool { return strings.Contains(e.Error(), "category remote") })], ErrNotDownloaded) {
		t.Error("the remote source's error does not wrap ErrNotDownloaded")
	}
}

// TestLastGood: a local source that loaded once keeps its entries, read
// from its last good copy, when it becomes empty, garbage, deleted or a
// folder; only with LoadOptions.LastGood; the copy is rewritten only when
// the source changed.
func TestLastGood(t *testing.T) {
	dir := t.TempDir()
	list := filepath.Join(dir, "lists", "bad.txt")
	writeFile(t, list, "one.example\n||two.example^\n")
	writeFile(t, filepath.Join(dir, "ut1", "adult", "domains"), "adult.example\n")
	cfgPath := filepath.Join(dir, "sluice.yaml")
	writeFile(t, cfgPath, "categories:\n  bad: [lists/bad.txt]\ncategory_dirs: [ut1]\nrules:\n  - block: [category:bad, category:adult]\n")
	cfg, err := LoadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	set, err := LoadSet(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteLastGood(set); err != nil {
		t.Fatal(err)
	}
	copyPath := cfg.LastGoodPath(cfg.Categories["bad"][0])
	if !strings.HasPrefix(copyPath, filepath.Join(dir, "cache")+string(filepath.Separator)) {
		t.Fatalf("last good copy at %s, want it in the cache folder", copyPath)
	}
	fi, err := os.Stat(copyPath)
	if err != nil {
		t.Fatal(err)
	}
	// Unchanged: not written again.
	if err := WriteLastGood(set); err != nil {
		t.Fatal(err)
	}
	if fi2, _ := os.Stat(copyPath); !fi2.ModTime().Equal(fi.ModTime()) {
		t.Error("an unchanged source's copy was rewritten")
	}

	breakers := map[string]func(){
		"emptied":     func() { writeFile(t, list, "") },
		"garbage":     func() { writeFile(t, list, strings.Repeat("<p>not a list at all</p>\n", 1500)) },
		"deleted":     func() { os.Remove(list) },
		"folder":      func() { os.Remove(list); os.MkdirAll(list, 0o755) },
		"ut1 deleted": func() { os.Remove(filepath.Join(dir, "ut1", "adult", "domains")) },
	}
	for _, name := range []string{"emptied", "garbage", "deleted", "folder", "ut1 deleted"} {
		breakers[name]()
		set, err := LoadSet(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if len(set.SourceErrors()) == 0 {
			t.Errorf("%s: no source error without LastGood", name)
		}
		set, err = LoadSetWith(cfg, LoadOptions{LastGood: true})
		if err != nil {
			t.Fatal(err)
		}
		bad, adult := set.Categories["bad"], set.Categories["adult"]
		if !slices.Equal(bad.Block, []string{"one.example", "two.example"}) || !slices.Equal(adult.Block, []string{"adult.example"}) {
			t.Errorf("%s: bad = %v, adult = %v; want the last good entries", name, bad.Block, adult.Block)
		}
		if errs := set.SourceErrors(); len(errs) != 0 {
			t.Errorf("%s: SourceErrors with last good copies: %v", name, errs)
		}
		if st := bad.Sources[0]; st.LastGood != copyPath || st.Problem() == nil || st.Entries != 2 {
			t.Errorf("%s: source stats %+v: want LastGood, the problem and 2 entries", name, st)
		}
		// WriteLastGood never overwrites a good copy with a broken source.
		if err := WriteLastGood(set); err != nil {
			t.Fatal(err)
		}
	}
	// A new good version replaces the copy.
	os.RemoveAll(list)
	writeFile(t, list, "three.example\n")
	writeFile(t, filepath.Join(dir, "ut1", "adult", "domains"), "adult.example\n")
	set, _ = LoadSet(cfg)
	if err := WriteLastGood(set); err != nil {
		t.Fatal(err)
	}
	writeFile(t, list, "")
	set, _ = LoadSetWith(cfg, LoadOptions{LastGood: true})
	if got := set.Categories["bad"].Block; !slices.Equal(got, []string{"three.example"}) {
		t.Errorf("after a new good version: %v", got)
	}
}
