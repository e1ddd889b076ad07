package accesslog

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// slogLine is the line slog's JSON handler writes for r at t: what
// LogJSON writes to a file.
func slogLine(t *testing.T, r *Record, at time.Time) []byte {
	t.Helper()
	var buf bytes.Buffer
	h := slog.NewJSONHandler(&buf, nil)
	a := r.attrs(nil)
	rec := slog.NewRecord(at, slog.LevelInfo, "access", 0)
	rec.AddAttrs(slog.Attr{Value: slog.GroupValue(a...)})
	if err := h.Handle(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// oddStrings are values that exercise every escape.
var oddStrings = []string{
	"", "a.test:443", `quote " and \ backslash`, "tab\tnew\nline\rcr", "\x00\x01\x1f\x7f",
	"<html>&amp;", "caf\u00e9 \u2028 \u2029 \U0001F600", "bad \xff\xfe utf8", "\xe2\x80", "end\\",
}

// randomRecord fills a record's fields from oddStrings and random numbers.
func randomRecord(rng *rand.Rand) *Record {
	s := func() string { return oddStrings[rng.IntN(len(oddStrings))] }
	r := &Record{
		ID: s(), Start: start, Duration: time.Duration(rng.Int64N(1e12)), Client: s(),
		Proto:  []string{"http", "socks5", "socks4a", "transparent"}[rng.IntN(4)],
		Method: s(), Target: s(), Path: s(), User: s(), Cmd: []string{"connect", "udp", s()}[rng.IntN(3)],
		Decided: rng.IntN(2) == 0, Verdict: s(), Reason: s(), Rule: s(), Category: s(), Route: s(),
		Status: rng.IntN(600), Reply: rng.IntN(300) - 1, Up: rng.Int64() - rng.Int64(), Down: rng.Int64N(1 << 40),
		UDPBlocked: rng.Int64N(9), UDPDropped: rng.Int64N(9), WouldBlock: rng.IntN(2) == 0,
		WouldBlockRule: s(), SafeSearch: s(),
	}
	if rng.IntN(2) == 0 {
		r.Peer = netip.MustParseAddr("127.0.0.1")
	}
	if rng.IntN(2) == 0 {
		r.Err = errors.New(s())
	}
	if rng.IntN(2) == 0 {
		r.Sniffed = []slog.Attr{slog.String("sniff", s()), slog.String("sniffed", s())}
	}
	return r
}

// TestJSONLineMatchesSlog: the line encoded by appendRecordJSON is the
// one slog's JSON handler writes, byte for byte, for any record.
func TestJSONLineMatchesSlog(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	at := time.Date(2026, 12, 1, 17, 3, 4, 5006000, time.FixedZone("X", 3600))
	for i := range 2000 {
		r := randomRecord(rng)
		if i == 0 {
			r = tunnelRecord()
		}
		got, ok := appendRecordJSON(nil, at, r)
		if !ok {
			t.Fatalf("record %d not encoded", i)
		}
		if want := slogLine(t, r, at); !bytes.Equal(got, want) {
			t.Fatalf("record %d:\n got %s\nwant %s", i, got, want)
		}
	}
}

// TestJSONLineOtherKinds: a field of a kind the encoder does not write
// (a float, a group, an attribute without a key) leaves it to slog.
func TestJSONLineOtherKinds(t *testing.T) {
	for _, a := range []slog.Attr{slog.Float64("f", 1.5), slog.Group("g", slog.Int("n", 1)), slog.Any("", nil), slog.Time("t", start)} {
		r := tunnelRecord()
		r.Sniffed = []slog.Attr{a}
		if _, ok := appendRecordJSON(nil, start, r); ok {
			t.Errorf("%v encoded", a)
		}
	}
}

// TestJSONFileLine: a JSON log file gets the line slog would have written
// (its time apart), and a record with a field of another kind still gets
// its line.
func TestJSONFileLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "access.log")
	l, err := Open(path, FormatJSON, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := tunnelRecord()
	l.Write(r)
	odd := tunnelRecord()
	odd.Sniffed = []slog.Attr{slog.Float64("ratio", 0.5)}
	l.Write(odd)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines: %s", len(lines), b)
	}
	noTime := func(s string) string { _, rest, _ := strings.Cut(s, `","level"`); return rest }
	if got, want := noTime(lines[0]), noTime(strings.TrimSuffix(string(slogLine(t, r, start)), "\n")); got != want || got == "" {
		t.Errorf("line\n got %s\nwant %s", got, want)
	}
	if !strings.Contains(lines[1], `"ratio":0.5`) {
		t.Errorf("second line %s", lines[1])
	}
}

// BenchmarkJSONLine is one tunnel's access line encoded for a file.
func BenchmarkJSONLine(b *testing.B) {
	r := tunnelRecord()
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		buf, _ = appendRecordJSON(buf[:0], start, r)
	}
}
