package rules

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The files in testdata/lists are laid out like the lists people download
// (headers, comments, cosmetic and path rules first), with made-up domains.
// EasyList's first 250 lines hold no domain: a detection that reads only
// the head of a file judges it plain and loads nothing from it.

type fixture struct {
	file         string
	format       string
	block, allow int      // entries expected
	has, allowed []string // some of the Block and Allow entries
	absent       []string // named in the file, but by rules that are not whole-host rules
}

var fixtures = []fixture{
	{"easylist.txt", FormatAdblock, 90, 5,
		[]string{"linkbeacon94.example.com", "clickdata70.test"}, []string{"www.beaconmetric56.example.org"},
		[]string{"trackinsight23.example.net"}},
	{"easyprivacy.txt", FormatAdblock, 120, 4,
		[]string{"lyticsbanner62.example.net", "netpixel24.test"}, []string{"spotinsight37.example"},
		[]string{"beaconad83.example"}},
	{"adguard-dns.txt", FormatAdblock, 260, 12,
		[]string{"adstag16.test", "cdn.popad37.example.net"}, []string{"logbid33.example.org"},
		[]string{"beaconbid58.example.org"}},
	{"stevenblack-hosts.txt", FormatHosts, 315, 0,
		[]string{"synchub4.test", "poppromo31.example.net"}, nil, []string{"localhost", "broadcasthost", "ip6-allnodes"}},
	{"oisd-big.txt", FormatAdblock, 300, 0, []string{"www.spotsense41.example.org", "ads.mediaspot53.example.net"}, nil, nil},
	{"oisd-domainswild.txt", FormatWildcard, 300, 0, []string{"promoflow37.example.net", "lyticsnet78.example.net"}, nil, nil},
	{"oisd-dnsmasq.txt", FormatDnsmasq, 300, 0, []string{"countbeacon45.example", "ads.statad87.example.com"}, nil, nil},
	{"hagezi-pro-adblock.txt", FormatAdblock, 300, 0, []string{"pixel.hubinsight93.example.net", "serveinsight6.example.net"}, nil, nil},
	{"hagezi-pro-wildcard.txt", FormatWildcard, 300, 0, []string{"t.lyticsdata37.example.com", "sensecdn15.example.com"}, nil, nil},
	{"hagezi-pro-domains.txt", FormatPlain, 300, 0, []string{"senseserve39.example", "beacontrack48.example.com"}, nil, nil},
	{"hagezi-pro-dnsmasq.txt", FormatDnsmasq, 300, 0, []string{"linkzone68.example.net", "hubtrack67.example.com"}, nil, nil},
	{"ut1/publicite/domains", FormatPlain, 300, 0, []string{"mediacdn42.example", "192.0.2.29"}, nil, nil},
}

func checkFixture(t *testing.T, fx fixture, format string, data []byte) {
	t.Helper()
	var block, allow []string
	st, err := ParseListFormat(bytes.NewReader(data), fx.file, format, func(e Entry) {
		if e.Allow {
			allow = append(allow, e.Domain)
		} else {
			block = append(block, e.Domain)
		}
	})
	if err != nil {
		t.Fatalf("ParseListFormat(%s, %q): %v", fx.file, format, err)
	}
	if st.Format != fx.format || len(block) != fx.block || len(allow) != fx.allow || st.Invalid != 0 {
		t.Errorf("%s: format %s, %d entries, %d exceptions, %d invalid (%v); want %s, %d, %d, 0",
			fx.file, st.Format, len(block), len(allow), st.Invalid, st.Errors, fx.format, fx.block, fx.allow)
	}
	for _, d := range fx.has {
		if !slices.Contains(block, d) {
			t.Errorf("%s: %s not among the entries", fx.file, d)
		}
	}
	for _, d := range fx.allowed {
		if !slices.Contains(allow, d) {
			t.Errorf("%s: %s not among the exceptions", fx.file, d)
		}
	}
	for _, d := range fx.absent {
		if slices.Contains(block, d) || slices.Contains(allow, d) {
			t.Errorf("%s: %s read from a rule that does not cover the whole host", fx.file, d)
		}
	}
}

func TestParseListFixtures(t *testing.T) {
	for _, fx := range fixtures {
		t.Run(fx.file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata", "lists", fx.file))
			if err != nil {
				t.Fatal(err)
			}
			checkFixture(t, fx, "", data)        // detected
			checkFixture(t, fx, fx.format, data) // stated, as with {file: P, format: F}
			if f, err := DetectFormat(bytes.NewReader(data), fx.file); err != nil || f != fx.format {
				t.Errorf("DetectFormat = %q, %v; want %s", f, err, fx.format)
			}
		})
	}
}

// Without the "[Adblock Plus 2.0]" header, EasyList is still told from its
// cosmetic, path and "||" rules, counted over the whole file.
func TestDetectFormatWithoutHeader(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "lists", "easylist.txt"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, _ := bytes.Cut(data, []byte("\n"))
	if f, err := DetectFormat(bytes.NewReader(rest), "easylist.txt"); err != nil || f != FormatAdblock {
		t.Errorf("DetectFormat = %q, %v; want adblock", f, err)
	}
	// A header decides even when most lines would vote otherwise.
	hdr := "\ufeff[Adblock Plus 2.0]\r\n" + strings.Repeat("a.example\n", 50) + "||b.example^\n"
	var got []string
	st, err := ParseList(strings.NewReader(hdr), "x", func(e Entry) { got = append(got, e.Domain) })
	if err != nil || st.Format != FormatAdblock || len(got) != 51 {
		t.Errorf("stats %+v, %d entries, %v", st, len(got), err)
	}
}

// A stated format is the one read, even where detection would choose
// another; ParseListFormat reads from where the reader stands.
func TestParseListStatedFormat(t *testing.T) {
	const list = "[Adblock Plus 2.0]\n||a.example^\naddress=/b.example/0.0.0.0\n"
	for _, tt := range []struct {
		format  string
		entries []string
		invalid int
	}{
		{"", []string{"a.example"}, 0},
		{"adblock", []string{"a.example"}, 0},
		{"dnsmasq", []string{"b.example"}, 2},
		{"Domains", nil, 3},
	} {
		var got []string
		st, err := ParseListFormat(strings.NewReader(list), "x", tt.format, func(e Entry) { got = append(got, e.Domain) })
		if err != nil || !slices.Equal(got, tt.entries) || st.Invalid != tt.invalid {
			t.Errorf("format %q: %v, stats %+v, %v", tt.format, got, st, err)
		}
	}
	if _, err := ParseListFormat(strings.NewReader(list), "x", "abp", func(Entry) {}); err == nil ||
		!strings.Contains(err.Error(), `x:1: unknown list format "abp"`) {
		t.Errorf("unknown format: %v", err)
	}
}

// A UT1 category folder is read as plain domains: its urls and expressions
// files are left out.
func TestLoadUT1Fixture(t *testing.T) {
	abs, err := filepath.Abs(filepath.Join("testdata", "lists", "ut1"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := Parse(filepath.Join(t.TempDir(), "sluice.yaml"), []byte("category_dirs: ["+abs+"]\nrules:\n  - block: [category:publicite]\n"))
	if err != nil {
		t.Fatal(err)
	}
	set, err := LoadSet(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cl := set.Categories["publicite"]
	if cl == nil || len(cl.Block) != 300 || len(cl.Sources) != 1 || cl.Sources[0].Format != FormatPlain || cl.Sources[0].Skipped != 2 {
		t.Fatalf("publicite = %+v", cl)
	}
	if errs := set.SourceErrors(); len(errs) != 0 {
		t.Errorf("SourceErrors = %v", errs)
	}
}

// A source's format: is the one its files are read in, by LoadSet and by
// Explain alike.
func TestLoadStatedFormat(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "mixed.txt"), "[Adblock Plus 2.0]\n||a.example^\naddress=/b.example/0.0.0.0\n")
	cfg, err := Parse(filepath.Join(dir, "sluice.yaml"), []byte("categories:\n  d: {file: mixed.txt, format: dnsmasq}\n  a: mixed.txt\nrules:\n  - block: [category:d, category:a]\n"))
	if err != nil {
		t.Fatal(err)
	}
	set, err := LoadSet(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if d := set.Categories["d"]; !slices.Equal(d.Block, []string{"b.example"}) || d.Sources[0].Format != FormatDnsmasq {
		t.Errorf("d = %v (%s)", d.Block, d.Sources[0].Format)
	}
	if a := set.Categories["a"]; !slices.Equal(a.Block, []string{"a.example"}) || a.Sources[0].Format != FormatAdblock {
		t.Errorf("a = %v (%s)", a.Block, a.Sources[0].Format)
	}
	m := Explain(set, "www.b.example")
	if len(m) != 1 || m[0].Category != "d" || m[0].Line != 3 {
		t.Errorf("Explain = %+v", m)
	}
}
