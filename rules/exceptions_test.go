package rules

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestExceptionsFileRoundTrip(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "cache", ExceptionsFile)
	if list, err := LoadExceptions(path); err != nil || list != nil {
		t.Fatalf("missing file: %v %v", list, err)
	}
	now := time.Date(2026, 12, 1, 13, 0, 0, 0, time.UTC)
	a := Exception{Domain: "wiki.example", Until: now.Add(time.Hour), Added: now}
	b := Exception{Domain: "games.example", Until: now.Add(time.Minute), Client: netip.MustParsePrefix("10.1.0.0/16"), User: "alice", Added: now}
	list := AddException(AddException(nil, a, now), b, now)
	// The same domain, client and user replaces; an ended entry goes.
	a2 := a
	a2.Until = now.Add(2 * time.Hour)
	list = AddException(list, a2, now.Add(2*time.Minute))
	if len(list) != 1 || list[0] != a2 {
		t.Fatalf("AddException: %v", list)
	}
	list = append(list, b)
	if err := SaveExceptions(path, list); err != nil {
		t.Fatal(err)
	}
	got, err := LoadExceptions(path)
	if err != nil || len(got) != 2 || !got[0].Until.Equal(a2.Until) || got[1].Client != b.Client || got[1].User != "alice" {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	rest, n := RemoveException(got, "wiki.example")
	if n != 1 || len(rest) != 1 || rest[0].Domain != "games.example" {
		t.Fatalf("RemoveException: %v %d", rest, n)
	}
}

func TestExceptionsFileErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct{ name, data, want string }{
		{"syntax", "[{\"domain\": \"a.example\",\n  oops}]\n", "bad.json:2: exceptions: invalid character"},
		{"type", "[{\"domain\": 5}]", "bad.json:1: exceptions: json: cannot unmarshal"},
		{"domain", `[{"domain": "A.example", "until": "2026-12-01T14:00:00Z"}]`, `entry 1: invalid domain "A.example"`},
		{"until", `[{"domain": "a.example"}]`, `entry 1 (a.example): no until`},
		{"client", `[{"domain": "a.example", "until": "2026-12-01T14:00:00Z", "client": "10.0.0.300"}]`, `entry 1 (a.example): invalid client "10.0.0.300"`},
	} {
		p := filepath.Join(dir, "bad.json")
		os.WriteFile(p, []byte(tt.data), 0o644)
		_, err := LoadExceptions(p)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want %q", tt.name, err, tt.want)
		}
		var pe *ParseError
		if (tt.name == "syntax" || tt.name == "type") && !errors.As(err, &pe) {
			t.Errorf("%s: %T is not a ParseError", tt.name, err)
		}
	}
}

func TestExceptionDomain(t *testing.T) {
	for in, want := range map[string]string{
		"Wiki.Example.":                          "wiki.example",
		"*.wiki.example":                         "wiki.example",
		".wiki.example":                          "wiki.example",
		"https://user@www.Wiki.example:8443/p?q": "www.wiki.example",
	} {
		if got, err := ExceptionDomain(in); err != nil || got != want {
			t.Errorf("ExceptionDomain(%q) = %q %v, want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "192.0.2.1", "exa mple.com"} {
		if got, err := ExceptionDomain(bad); err == nil {
			t.Errorf("ExceptionDomain(%q) = %q, want an error", bad, got)
		}
	}
}
