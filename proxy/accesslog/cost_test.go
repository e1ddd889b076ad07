package accesslog

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// tunnelRecord is a typical CONNECT tunnel's record.
func tunnelRecord() *Record {
	return &Record{ID: "r1", Start: start, Client: "127.0.0.1:40000", Proto: "http", Method: "CONNECT",
		Target: "a.test:443", Decided: true, Verdict: "allow", Reason: "no rule matched", Rule: "default", Route: "direct",
		Status: 200, Reply: -1, Up: 517, Down: 4096, Peer: netip.MustParseAddr("127.0.0.1"), Duration: time.Millisecond}
}

// TestLogJSONOff: with the logger above Info, an access line costs
// nothing: its fields are not even built.
func TestLogJSONOff(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn}))
	r := tunnelRecord()
	if n := testing.AllocsPerRun(100, func() { LogJSON(l, r) }); n != 0 {
		t.Errorf("%.0f allocations per line that is not written", n)
	}
	if buf.Len() != 0 {
		t.Errorf("wrote %q", buf.String())
	}
}

// TestLogJSONReusesNothingStale writes a line with every optional field,
// then a bare one: the fields are built in a reused slice, and none of
// the first line's may reach the second.
func TestLogJSONReusesNothingStale(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(slog.NewJSONHandler(&buf, nil))
	full := tunnelRecord()
	full.User, full.WouldBlock, full.WouldBlockRule, full.SafeSearch = "alice", true, "rule 3", "forcesafesearch.test"
	full.Err = errors.New("boom")
	full.Sniffed = []slog.Attr{slog.String("sniff", "tls"), slog.String("sniffed", "b.test")}
	LogJSON(l, full)
	LogJSON(l, &Record{ID: "r2", Start: start, Client: "127.0.0.1:9", Proto: "socks", Reply: -1})
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines: %q", len(lines), buf.String())
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(lines[1]), &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"user", "would_block", "safesearch", "err", "sniff", "sniffed", "peer", "rule", "method"} {
		if v, ok := m[k]; ok && v != "" {
			t.Errorf("second line has %s=%v from the first: %s", k, v, lines[1])
		}
	}
	if m["request_id"] != "r2" || m["verdict"] != "none" {
		t.Errorf("second line %s", lines[1])
	}
}

// BenchmarkLogJSON is one tunnel's access line through a JSON handler.
func BenchmarkLogJSON(b *testing.B) {
	l := slog.New(slog.NewJSONHandler(io.Discard, nil))
	r := tunnelRecord()
	b.ReportAllocs()
	for b.Loop() {
		LogJSON(l, r)
	}
}

// BenchmarkSquid is one tunnel's access line in Squid's format.
func BenchmarkSquid(b *testing.B) {
	r := tunnelRecord()
	b.ReportAllocs()
	for b.Loop() {
		_ = Squid(r)
	}
}

// BenchmarkSquidLine is one tunnel's Squid line as Write makes it, into
// a reused buffer.
func BenchmarkSquidLine(b *testing.B) {
	r := tunnelRecord()
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		buf = appendSquid(buf[:0], r)
	}
}

// TestLogJSONSameLine: LogJSON hands the fields to the handler as one
// group without a key; the line must be byte for byte the one the fields
// given one by one make, through the JSON and the text handler (a
// ReplaceAttr sees them too), and the handler must get them without the
// record's per-line allocation of the fields beyond its inline five.
func TestLogJSONSameLine(t *testing.T) {
	full := tunnelRecord()
	full.User, full.WouldBlock, full.WouldBlockRule, full.SafeSearch = "alice smith", true, "rule 3", "forcesafesearch.test"
	full.Err = errors.New(`boom "quoted"`)
	full.Sniffed = []slog.Attr{slog.String("sniff", "tls"), slog.String("sniffed", "b.test")}
	noTime := func(groups []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey && len(groups) == 0 {
			return slog.Attr{}
		}
		if a.Key == "up" {
			a.Value = slog.StringValue("replaced")
		}
		return a
	}
	opts := &slog.HandlerOptions{ReplaceAttr: noTime}
	for _, r := range []*Record{full, tunnelRecord()} {
		for name, h := range map[string]func(io.Writer) slog.Handler{
			"json": func(w io.Writer) slog.Handler { return slog.NewJSONHandler(w, opts) },
			"text": func(w io.Writer) slog.Handler { return slog.NewTextHandler(w, opts) },
		} {
			var got, want bytes.Buffer
			LogJSON(slog.New(h(&got)), r)
			slog.New(h(&want)).LogAttrs(context.Background(), slog.LevelInfo, "access", r.attrs(nil)...)
			if got.String() != want.String() || got.Len() == 0 {
				t.Errorf("%s: LogJSON wrote\n%s\nfields one by one write\n%s", name, got.String(), want.String())
			}
		}
	}
	l, r := slog.New(slog.NewJSONHandler(io.Discard, nil)), tunnelRecord()
	if n := testing.AllocsPerRun(100, func() { LogJSON(l, r) }); n > 1 && !raceEnabled {
		t.Errorf("%.0f allocations per tunnel line, want at most 1", n)
	}
}
