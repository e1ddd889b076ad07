package rules

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func parseFile(t *testing.T, path string) ([]Entry, ListStats) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var got []Entry
	st, err := ParseList(f, path, func(e Entry) { got = append(got, e) })
	if err != nil {
		t.Fatalf("ParseList(%s): %v", path, err)
	}
	return got, st
}

func TestParseListFormats(t *testing.T) {
	e := func(line int, d string) Entry { return Entry{Domain: d, Line: line} }
	tests := []struct {
		file             string
		format           string
		want             []Entry
		skipped, invalid int
		firstErr         string
	}{
		{"plain.txt", FormatPlain, []Entry{
			e(2, "example.com"), e(3, "www.example.org"), e(4, "ads.example.net"), e(6, "xn--bcher-kva.example"),
			e(7, "wild.example"), e(8, "dot.example"), e(9, "_dmarc.mail.example"), e(10, "192.0.2.1"),
		}, 0, 2, `testdata/plain.txt:11: want one domain a line, got "not a domain"`},
		{"hosts.txt", FormatHosts, []Entry{
			e(8, "ads.example.com"), e(8, "tracker.example.com"), e(9, "metrics.example.net"), e(10, "v6.example.org"),
			e(13, "xn--mnchen-3ya.example"),
		}, 9, 2, `testdata/hosts.txt:11: invalid domain "bad_host!.example"`},
		{"adblock.txt", FormatAdblock, []Entry{
			e(4, "ads.example.com"), e(5, "tracker.example.org"), // line 6 is narrowed by "$script,domain=": skipped
			{Domain: "good.example.com", Allow: true, Line: 7}, {Domain: "allowed.example.org", Allow: true, Line: 8},
			e(10, "wild.example"), e(18, "plain.example.info"),
		}, 8, 1, `testdata/adblock.txt:17: invalid domain "bad domain.example"`},
		{"dnsmasq.txt", FormatDnsmasq, []Entry{
			e(2, "ads.example.com"), e(3, "tracker.example.org"), e(4, "corp.example"), e(5, "one.example"),
			e(5, "two.example"), e(6, "lan.example"),
		}, 3, 2, `testdata/dnsmasq.txt:10: invalid domain "bad..example"`},
	}
	for _, tt := range tests {
		t.Run(tt.format, func(t *testing.T) {
			got, st := parseFile(t, filepath.Join("testdata", tt.file))
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("entries\n got %v\nwant %v", got, tt.want)
			}
			if st.Format != tt.format || st.Entries != len(tt.want) || st.Skipped != tt.skipped || st.Invalid != tt.invalid {
				t.Errorf("stats = %+v; want format %s, %d entries, %d skipped, %d invalid", st, tt.format, len(tt.want), tt.skipped, tt.invalid)
			}
			if len(st.Errors) != tt.invalid {
				t.Fatalf("errors = %v", st.Errors)
			}
			var pe *ParseError
			if !errors.As(st.Errors[0], &pe) || st.Errors[0].Error() != tt.firstErr {
				t.Errorf("first error = %v, want %s", st.Errors[0], tt.firstErr)
			}
		})
	}
}

func TestParseListInvalidLimit(t *testing.T) {
	var b strings.Builder
	for i := range 1500 {
		fmt.Fprintf(&b, "%d bad line %d\n", i, i)
	}
	n := 0
	st, err := ParseList(strings.NewReader(b.String()), "junk.txt", func(Entry) { n++ })
	if !errors.Is(err, ErrNotAList) {
		t.Fatalf("err = %v, want ErrNotAList", err)
	}
	if st.Invalid != 1000 || len(st.Errors) != MaxListErrors || n != 0 {
		t.Errorf("stats = %+v, entries %d", st, n)
	}
	if !strings.HasPrefix(err.Error(), "junk.txt:1000: too many invalid lines") {
		t.Errorf("err = %v", err)
	}

	// Many invalid lines among more valid ones are not fatal.
	b.Reset()
	for i := range 2500 {
		fmt.Fprintf(&b, "host%d.example\nbad line %d\n", i, i)
	}
	st, err = ParseList(strings.NewReader(b.String()), "mixed.txt", func(Entry) {})
	if err != nil || st.Entries != 2500 || st.Invalid != 2500 {
		t.Errorf("mixed: %+v, %v", st, err)
	}
}

func TestParseListEdgeCases(t *testing.T) {
	tests := []struct {
		name, in string
		want     []string
	}{
		{"empty", "", nil},
		{"no final newline", "a.example", []string{"a.example"}},
		{"only BOM", "\xef\xbb\xbf", nil},
		{"BOM and CRLF hosts", "\xef\xbb\xbf0.0.0.0 a.example\r\n0.0.0.0 b.example\r\n", []string{"a.example", "b.example"}},
		{"tabs and comments", "\t a.example\t# x\n#b.example\n  # c.example\n", []string{"a.example"}},
		{"adblock with hash comment", "! x\n# y\n||a.example^\n", []string{"a.example"}},
		{"late adblock lines in plain list", "a.example\nb.example\n", []string{"a.example", "b.example"}},
	}
	for _, tt := range tests {
		var got []string
		if _, err := ParseList(strings.NewReader(tt.in), tt.name, func(e Entry) { got = append(got, e.Domain) }); err != nil {
			t.Errorf("%s: %v", tt.name, err)
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: got %q, want %q", tt.name, got, tt.want)
		}
	}
	// A line too long for the scanner ends the parse with a positioned error.
	long := "a.example\n" + strings.Repeat("x", 2*maxLineLen) + "\n"
	_, err := ParseList(strings.NewReader(long), "long.txt", func(Entry) {})
	if err == nil || !strings.HasPrefix(err.Error(), "long.txt:2: read:") {
		t.Errorf("long line: err = %.200v", err)
	}
}

func TestParseListDetectsLateFormat(t *testing.T) {
	// A hosts file whose first meaningful lines are all hosts lines,
	// beyond the detection window.
	var b bytes.Buffer
	for i := range 200 {
		fmt.Fprintf(&b, "0.0.0.0 h%d.example\n", i)
	}
	var n int
	st, err := ParseList(&b, "big.hosts", func(Entry) { n++ })
	if err != nil || st.Format != FormatHosts || n != 200 || st.Lines != 200 {
		t.Errorf("stats %+v, %d entries, %v", st, n, err)
	}
}

func FuzzParseList(f *testing.F) {
	for _, name := range []string{"plain.txt", "hosts.txt", "adblock.txt", "dnsmasq.txt"} {
		data, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, name := range []string{"easylist.txt", "adguard-dns.txt", "oisd-domainswild.txt"} {
		data, err := os.ReadFile(filepath.Join("testdata", "lists", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data[:min(len(data), 4096)])
	}
	f.Add([]byte("\xef\xbb\xbf||a.example^$third-party\r\n@@||b.example^\r\n"))
	f.Add([]byte("address=/a.example/b.example/0.0.0.0\nserver=/#/\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		lines := bytes.Count(data, []byte("\n")) + 1
		st, _ := ParseList(bytes.NewReader(data), "fuzz", func(e Entry) {
			if h, err := NormalizeHost(e.Domain); err != nil || h != e.Domain {
				t.Fatalf("entry %q not normalized", e.Domain)
			}
			if e.Line < 1 || e.Line > lines {
				t.Fatalf("entry line %d of %d", e.Line, lines)
			}
		})
		if len(st.Errors) > MaxListErrors || len(st.Errors) > st.Invalid {
			t.Fatalf("stats %+v", st)
		}
	})
}
