package test

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPublishedListFormats: the realistic fixtures of rules/testdata/lists
// (EasyList, EasyPrivacy, AdGuard DNS filter, StevenBlack hosts, OISD and
// HaGeZi in their Adblock, wildcard, domains and dnsmasq variants, a UT1
// folder), as files, with and without format:, and one as a URL, start the
// real binary, whose rules then block an entry of each (and a subdomain of
// it) before any dial, while rules those lists narrow to some requests
// (EasyList's "$script,domain=") do not block their host. Before formats
// were detected over the whole file, EasyList and EasyPrivacy loaded as
// plain lists of garbage and blocked none of their domains.
func TestPublishedListFormats(t *testing.T) {
	fx, err := filepath.Abs("../rules/testdata/lists")
	if err != nil {
		t.Fatal(err)
	}
	f := func(name string) string { return filepath.Join(fx, name) }
	wild, err := os.ReadFile(f("oisd-domainswild.txt"))
	if err != nil {
		t.Fatal(err)
	}
	lists := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(wild) })) // on 127.0.0.1
	defer lists.Close()
	origin := newAcceptCounter(t)

	blocked := map[string]string{ // a host to request -> the fixture it is in
		"www.linkbeacon94.example.com": "easylist.txt",
		"lyticsbanner62.example.net":   "easyprivacy.txt",
		"x.adstag16.test":              "adguard-dns.txt",
		"synchub4.test":                "stevenblack-hosts.txt",
		"ads.mediaspot53.example.net":  "oisd-big.txt",
		"a.b.promoflow37.example.net":  "oisd-domainswild.txt (URL)",
		"countbeacon45.example":        "oisd-dnsmasq.txt",
		"serveinsight6.example.net":    "hagezi-pro-adblock.txt",
		"www.sensecdn15.example.com":   "hagezi-pro-wildcard.txt",
		"senseserve39.example":         "hagezi-pro-domains.txt",
		"linkzone68.example.net":       "hagezi-pro-dnsmasq.txt",
		"mediacdn42.example":           "ut1/publicite/domains",
	}
	allowed := []string{
		"trackinsight23.example.net", // EasyList: ||trackinsight23.example.net^$... narrowed by options
		"beaconad83.example",         // EasyPrivacy: a path rule on the host
		"localhost.example",          // not listed anywhere
	}
	var hosts []string
	for h := range blocked {
		hosts = append(hosts, h+": 127.0.0.1")
	}
	for _, h := range allowed {
		hosts = append(hosts, h+": 127.0.0.1")
	}
	cfg := "hosts: {" + strings.Join(hosts, ", ") + "}\n" +
		"categories:\n" +
		"  easylist: {file: " + f("easylist.txt") + ", format: adblock}\n" +
		"  easyprivacy: " + f("easyprivacy.txt") + "\n" +
		"  adguard: [" + f("adguard-dns.txt") + "]\n" +
		"  hosts: {file: " + f("stevenblack-hosts.txt") + "}\n" +
		"  oisd:\n" +
		"    - " + f("oisd-big.txt") + "\n" +
		"    - {url: \"" + lists.URL + "/domainswild\", format: wildcard}\n" +
		"    - {file: " + f("oisd-dnsmasq.txt") + ", format: dnsmasq}\n" +
		"  hagezi:\n" +
		"    - " + f("hagezi-pro-adblock.txt") + "\n" +
		"    - {file: " + f("hagezi-pro-wildcard.txt") + ", format: wildcard}\n" +
		"    - {file: " + f("hagezi-pro-domains.txt") + ", format: domains}\n" +
		"    - " + f("hagezi-pro-dnsmasq.txt") + "\n" +
		"category_dirs: [" + f("ut1") + "]\n" +
		"rules:\n  - block: [category:easylist, category:easyprivacy, category:adguard, category:hosts, category:oisd, category:hagezi, category:publicite]\n"
	p := startSluice(t, cfg, nil)

	for host, from := range blocked {
		before := origin.accepts.Load()
		if got := statusOf(t, p, "http://"+host+":"+origin.port+"/"); got != "403" {
			t.Errorf("%s (from %s): HTTP %s, want 403", host, from, got)
		}
		if n := origin.accepts.Load() - before; n != 0 {
			t.Errorf("%s (from %s): %d accepts at the origin, want 0", host, from, n)
		}
	}
	for _, host := range allowed {
		before := origin.accepts.Load()
		got := statusOf(t, p, "http://"+host+":"+origin.port+"/")
		if got == "403" || origin.accepts.Load() == before {
			t.Errorf("%s: HTTP %s and no accept at the origin; want the request passed on", host, got)
		}
	}

	cfgFile := filepath.Join(p.dir, "sluice.yaml")
	out, code := runCLI(t, p.dir, "list", "-c", cfgFile)
	for _, want := range []string{
		"file " + f("easylist.txt") + ": 95 entries (adblock)", // 90 and 5 exceptions,
		"file " + f("easyprivacy.txt") + ": 124 entries (adblock)",
		"file " + f("stevenblack-hosts.txt") + ": 315 entries (hosts)",
		"url " + lists.URL + "/domainswild: 300 entries (wildcard)",
		"file " + f("hagezi-pro-domains.txt") + ": 300 entries (plain)",
		"dir " + f("ut1/publicite") + ": 300 entries (plain)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("sluice list lacks %q:\n%s", want, out)
		}
	}
	if code != 0 || strings.Contains(out, "ERROR") {
		t.Errorf("sluice list: exit %d:\n%s", code, out)
	}
	// What people paste: a URL with a path, *.domain, upper case.
	out, code = runCLI(t, p.dir, "list", "-c", cfgFile, "test", "https://WWW.LinkBeacon94.example.com/ads/banner.gif?x=1")
	if code != 0 || !strings.Contains(out, "easylist: "+f("easylist.txt")+":") || !strings.Contains(out, "entry linkbeacon94.example.com") {
		t.Errorf("list test: exit %d:\n%s", code, out)
	}
	out, code = runCLI(t, p.dir, "list", "-c", cfgFile, "test", "*.trackinsight23.example.net")
	if code != 1 || !strings.Contains(out, "trackinsight23.example.net: in no category") {
		t.Errorf("list test of a narrowed rule's host: exit %d:\n%s", code, out)
	}
}
