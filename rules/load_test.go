package rules

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	// UT1 layout: adult and gambling are categories, "porn" is a symlink
	// to adult, "empty" has no domains file, "social_networks" is excluded by only.
	ut1 := filepath.Join(dir, "blacklists")
	writeFile(t, filepath.Join(ut1, "adult", "domains"), "adult.example\nxxx.example\n")
	writeFile(t, filepath.Join(ut1, "adult", "urls"), "adult.example/path\n")
	writeFile(t, filepath.Join(ut1, "adult", "expressions"), "(porn|sex)\n")
	writeFile(t, filepath.Join(ut1, "adult", "usage"), "black\n")
	writeFile(t, filepath.Join(ut1, "gambling", "domains"), "casino.example\n")
	writeFile(t, filepath.Join(ut1, "empty", "urls"), "x.example/y\n")
	if err := os.Symlink("adult", filepath.Join(ut1, "porn")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "lists", "social.txt"), "# social\nfacebook.com\nbad line here\n")
	writeFile(t, filepath.Join(dir, "lists", "ads", "a.hosts"), "0.0.0.0 ads.example\n")
	writeFile(t, filepath.Join(dir, "lists", "ads", "b.abp"), "||track.example^\n@@||ok.track.example^\n")
	writeFile(t, filepath.Join(dir, "lists", "ads", ".hidden"), "hidden.example\n")

	cfgPath := filepath.Join(dir, "sluice.yaml")
	writeFile(t, cfgPath, dedent(`
		categories:
		  social: [lists/social.txt]
		  ads:
		    - lists/ads
		    - lists/missing.txt
		    - https://lists.example.org/ads.txt
		  porn: [lists/social.txt]
		category_dirs:
		  - path: blacklists
		rules:
		  - block: [category:porn, category:gambling, category:ads]
	`))
	set, err := Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	names := mapKeys(set.Categories)
	if want := []string{"ads", "adult", "gambling", "porn", "social"}; !reflect.DeepEqual(names, want) {
		t.Errorf("categories = %v, want %v", names, want)
	}
	check := func(name string, block, allow []string) {
		t.Helper()
		cl := set.Categories[name]
		if cl == nil || cl.Name != name || !reflect.DeepEqual(cl.Block, block) || !reflect.DeepEqual(cl.Allow, allow) {
			t.Errorf("%s = %+v; want block %v allow %v", name, cl, block, allow)
		}
	}
	check("adult", []string{"adult.example", "xxx.example"}, nil)
	check("porn", []string{"facebook.com", "adult.example", "xxx.example"}, nil)
	check("gambling", []string{"casino.example"}, nil)
	check("social", []string{"facebook.com"}, nil)
	check("ads", []string{"ads.example", "track.example"}, []string{"ok.track.example"})

	adult := set.Categories["adult"].Sources[0]
	if adult.Skipped != 2 || adult.Entries != 2 || adult.Err != nil || adult.File != filepath.Join(ut1, "adult", "domains") || adult.Source.Line != 9 {
		t.Errorf("adult stats = %+v", adult)
	}
	social := set.Categories["social"].Sources[0]
	if social.Entries != 1 || social.Invalid != 1 || len(social.Errors) != 1 || social.Format != FormatPlain ||
		social.Errors[0].Error() != filepath.Join(dir, "lists", "social.txt")+`:3: want one domain a line, got "bad line here"` {
		t.Errorf("social stats = %+v", social)
	}
	ads := set.Categories["ads"].Sources
	if len(ads) != 3 || ads[0].Entries != 3 || len(ads[0].Files) != 2 || ads[0].Err != nil {
		t.Fatalf("ads folder stats = %+v", ads)
	}
	if !errors.Is(ads[1].Err, os.ErrNotExist) {
		t.Errorf("missing source: Err = %v", ads[1].Err)
	}
	if ads[2].Err == nil || !strings.Contains(ads[2].Err.Error(), "not downloaded yet") {
		t.Errorf("remote source without cache: Err = %v", ads[2].Err)
	}

	// Once the cache file exists, the remote source is read from it.
	cache := set.Config.CachePath(set.Config.Categories["ads"][2])
	if filepath.Dir(cache) != filepath.Join(dir, "cache") || !strings.HasSuffix(cache, "-lists.example.org.list") {
		t.Errorf("CachePath = %s", cache)
	}
	writeFile(t, cache, "remote.example\n")
	set, err = Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if cl := set.Categories["ads"]; !slices.Contains(cl.Block, "remote.example") || cl.Sources[2].Err != nil {
		t.Errorf("ads after cache = %+v", cl)
	}

	// Explain finds every line that covers a host or a parent domain.
	got := Explain(set, "WWW.Track.Example.")
	want := []Match{{Category: "ads", File: filepath.Join(dir, "lists", "ads", "b.abp"), Line: 1, Entry: "track.example"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Explain = %+v, want %+v", got, want)
	}
	got = Explain(set, "ok.track.example")
	if len(got) != 2 || !got[1].Allow || got[1].Line != 2 {
		t.Errorf("Explain(ok.track.example) = %+v", got)
	}
	got = Explain(set, "xxx.example")
	if len(got) != 2 || got[0].Category != "adult" || got[1].Category != "porn" || got[1].File != filepath.Join(ut1, "porn", "domains") {
		t.Errorf("Explain(xxx.example) = %+v", got)
	}
	if got := Explain(set, "nothing.example"); got != nil {
		t.Errorf("Explain(nothing.example) = %+v", got)
	}
}

func TestLoadOnlyAndMissingCategory(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "ut1", "adult", "domains"), "adult.example\n")
	writeFile(t, filepath.Join(dir, "ut1", "games", "domains"), "game.example\n")
	cfg, err := Parse(filepath.Join(dir, "sluice.yaml"), []byte("category_dirs:\n  - {path: ut1, only: [games]}\ndefault: allow\n"))
	if err != nil {
		t.Fatal(err)
	}
	set, err := LoadSet(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(set.Categories) != 1 || set.Categories["games"] == nil {
		t.Errorf("categories = %v", mapKeys(set.Categories))
	}
	if _, err := LoadSet(nil); err == nil {
		t.Error("LoadSet(nil): no error")
	}
}

// TestCategoryUnique: a domain that two sources of one category list (and
// one listed twice in a file) is one entry of the category, as the README's
// ads category counts it, while each source keeps its own share.
func TestCategoryUnique(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "lists", "ads-hosts.txt"),
		"127.0.0.1  localhost\n0.0.0.0    ads.example.net tracker.example.org\n::         ads.example.com\n")
	writeFile(t, filepath.Join(dir, "lists", "easylist.txt"),
		"[Adblock Plus 2.0]\n||doubleclick.net^\n||ads.example.com^$third-party\n@@||help.ads.example.com^\n@@||help.ads.example.com^\nexample.org##.banner\n")
	cfgPath := filepath.Join(dir, "sluice.yaml")
	writeFile(t, cfgPath, "categories:\n  ads: [lists/ads-hosts.txt, lists/easylist.txt]\nrules:\n  - block: [category:ads]\n")
	set, err := Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	cl := set.Categories["ads"]
	block, allow := cl.Unique()
	if want := []string{"ads.example.net", "tracker.example.org", "ads.example.com", "doubleclick.net"}; !reflect.DeepEqual(block, want) {
		t.Errorf("Unique block = %v, want %v", block, want)
	}
	if want := []string{"help.ads.example.com"}; !reflect.DeepEqual(allow, want) {
		t.Errorf("Unique allow = %v, want %v", allow, want)
	}
	if len(cl.Block) != 5 || len(cl.Allow) != 2 {
		t.Errorf("Block %v Allow %v: every occurrence must stay for the sources' last good copies", cl.Block, cl.Allow)
	}
	if s := cl.Sources; s[0].Entries != 3 || s[0].Skipped != 1 || s[1].Entries != 4 || s[1].Skipped != 1 {
		t.Errorf("per-source figures: %+v", s)
	}
}
