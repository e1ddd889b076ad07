package test

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

// TestRemoteListFetchedByServe: a URL source with no cache is fetched by
// serve before it starts, and the running proxy then blocks its entries;
// `sluice list` shows the source and its refresh.
func TestRemoteListFetchedByServe(t *testing.T) {
	o := newOrigin(t, false)
	var fetches atomic.Int64
	lists := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		w.Header().Set("ETag", `"v1"`)
		if r.Header.Get("If-None-Match") == `"v1"` {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Write([]byte("# remote hosts list\n0.0.0.0 tracker.test\n0.0.0.0 ads.remote.test\n"))
	}))
	defer lists.Close()
	cfg := "hosts: {tracker.test: 127.0.0.1, www.tracker.test: 127.0.0.1, fine.test: 127.0.0.1}\n" +
		"categories:\n  ads:\n    - url: " + lists.URL + "/hosts.txt\n      refresh: 1h\n" +
		"rules:\n  - block: [\"category:ads\"]\n"
	p := startSluice(t, cfg, nil)
	eventually(t, "the remote list blocks www.tracker.test", func() bool {
		return statusOf(t, p, "http://www.tracker.test:"+o.port+"/") == "403"
	})
	if s := statusOf(t, p, "http://fine.test:"+o.port+"/"); s != "200" {
		t.Fatalf("fine.test: %s", s)
	}
	out, code := runCLI(t, p.dir, "list", "--config", filepath.Join(p.dir, "sluice.yaml"))
	if code != 0 || !strings.Contains(out, "ads") || !strings.Contains(out, lists.URL) {
		t.Fatalf("sluice list: exit %d:\n%s", code, out)
	}
	// `list update` revalidates with the ETag and gets a 304.
	out, code = runCLI(t, p.dir, "list", "update", "--config", filepath.Join(p.dir, "sluice.yaml"))
	if code != 0 {
		t.Fatalf("list update: exit %d:\n%s", code, out)
	}
	out, code = runCLI(t, p.dir, "list", "test", "--config", filepath.Join(p.dir, "sluice.yaml"), "www.tracker.test")
	if code != 0 || !strings.Contains(out, "ads") || !strings.Contains(out, ":2:") {
		t.Fatalf("list test: exit %d:\n%s", code, out)
	}
}

// TestListAddOnRunningProxy: `sluice list add` edits the list atomically
// and the running proxy blocks the new domain without a restart.
func TestListAddOnRunningProxy(t *testing.T) {
	o := newOrigin(t, false)
	p := startSluice(t, reloadConfig, map[string]string{"lists/bad.txt": "# keep me\none.test\n"})
	cfg := filepath.Join(p.dir, "sluice.yaml")
	out, code := runCLI(t, p.dir, "list", "add", "--config", cfg, "bad", "Three.Test.")
	if code != 0 {
		t.Fatalf("list add: exit %d: %s", code, out)
	}
	eventually(t, "three.test is blocked", func() bool {
		return statusOf(t, p, "http://three.test:"+o.port+"/") == "403"
	})
	out, code = runCLI(t, p.dir, "list", "rm", "--config", cfg, "bad", "one.test")
	if code != 0 {
		t.Fatalf("list rm: exit %d: %s", code, out)
	}
	eventually(t, "one.test is allowed again", func() bool {
		return statusOf(t, p, "http://one.test:"+o.port+"/") == "200"
	})
	out, _ = runCLI(t, p.dir, "list", "show", "--config", cfg, "bad")
	if !strings.Contains(out, "three.test") || strings.Contains(out, "one.test") {
		t.Fatalf("list show:\n%s", out)
	}
}

// TestCategoryDirsUT1: a UT1/squidGuard folder, with a category that is a
// symbolic link to another, blocks through the running proxy, and every
// list format loads as a category source.
func TestCategoryDirsUT1(t *testing.T) {
	o := newOrigin(t, false)
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"bl/gambling/domains":  "casino.test\n",
		"bl/gambling/urls":     "casino.test/poker\n",
		"bl/publicite/domains": "\ufeffAds.Test.\r\n",
		"bl/social/domains":    "friends.test\n",
		"lists/hosts.txt":      "127.0.0.1 localhost\n0.0.0.0 hosts.test other.test # inline\n",
		"lists/adblock.txt":    "! title\n||abp.test^$third-party\n@@||ok.abp.test^\nexample.org##.banner\n",
		"lists/dnsmasq.conf":   "address=/dnsmasq.test/0.0.0.0\nserver=/srv.dnsmasq2.test/127.0.0.1\n",
		"lists/plain.txt":      "# plain\nplain.test\n",
	})
	if err := os.Symlink("publicite", filepath.Join(dir, "bl/ads")); err != nil {
		t.Fatal(err)
	}
	names := []string{"casino.test", "www.ads.test", "friends.test", "hosts.test", "sub.abp.test", "ok.abp.test", "dnsmasq.test", "x.srv.dnsmasq2.test", "plain.test", "fine.test"}
	hosts := "hosts: {"
	for i, n := range names {
		if i > 0 {
			hosts += ", "
		}
		hosts += n + ": 127.0.0.1"
	}
	hosts += "}\n"
	cfg := hosts + "category_dirs:\n  - path: " + filepath.Join(dir, "bl") + "\n    only: [gambling, ads]\n" +
		"categories:\n  mixed: [" + strings.Join([]string{
		filepath.Join(dir, "lists/hosts.txt"), filepath.Join(dir, "lists/adblock.txt"),
		filepath.Join(dir, "lists/dnsmasq.conf"), filepath.Join(dir, "lists/plain.txt")}, ", ") + "]\n" +
		"rules:\n  - block: [\"category:gambling\", \"category:ads\", \"category:mixed\"]\n"
	p := startSluice(t, cfg, nil)
	want := map[string]string{
		"casino.test": "403", "www.ads.test": "403", "friends.test": "200", // social is not in `only`
		"hosts.test": "403", "sub.abp.test": "403", "ok.abp.test": "200", // an @@ exception
		"dnsmasq.test": "403", "x.srv.dnsmasq2.test": "403", "plain.test": "403", "fine.test": "200",
	}
	for host, code := range want {
		if got := statusOf(t, p, "http://"+host+":"+o.port+"/"); got != code {
			t.Errorf("%s: %s, want %s", host, got, code)
		}
	}
}
