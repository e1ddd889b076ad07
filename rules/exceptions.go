package rules

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// ExceptionsFile is the name of the temporary exceptions' state file
// (`sluice allow`), kept in the cache folder.
const ExceptionsFile = "exceptions.json"

// MaxExceptionFor bounds how long one temporary exception may last.
const MaxExceptionFor = 30 * 24 * time.Hour

// maxExceptions bounds the entries of the state file.
const maxExceptions = 10000

// Exception is a temporary allowance added by `sluice allow`: requests to
// Domain (and its subdomains) are allowed, before any rule, until Until,
// optionally only for a client network and a user.
type Exception struct {
	// Domain is normalized (NormalizeHost); it covers its subdomains.
	Domain string `json:"domain"`
	// Until is when the exception ends; a request at or after it is not covered.
	Until time.Time `json:"until"`
	// Client restricts the exception to a client network. Invalid: any client.
	Client netip.Prefix `json:"-"`
	// User restricts the exception to one authenticated user. Empty: anyone.
	User string `json:"user,omitempty"`
	// Added is when it was added, for people.
	Added time.Time `json:"added"`
}

// exceptionJSON is Exception as stored: the client as text, "" for any.
type exceptionJSON struct {
	Exception
	Client string `json:"client,omitempty"`
}

// String describes e for logs and the CLI: "example.com until 2026-12-01T14:00:00Z
// client 10.0.0.0/8 user alice".
func (e Exception) String() string {
	s := e.Domain + " until " + e.Until.UTC().Format(time.RFC3339)
	if e.Client.IsValid() {
		s += " client " + e.Client.String()
	}
	if e.User != "" {
		s += " user " + e.User
	}
	return s
}

// Covers reports whether e allows a request to host (normalized) from
// client by user at t.
func (e Exception) Covers(host string, client netip.Addr, user string, t time.Time) bool {
	if !t.Before(e.Until) {
		return false
	}
	if host != e.Domain && !strings.HasSuffix(host, "."+e.Domain) {
		return false
	}
	if e.Client.IsValid() && (!client.IsValid() || !e.Client.Contains(client.Unmap())) {
		return false
	}
	return e.User == "" || e.User == user
}

// ExceptionsPath is the state file of the temporary exceptions: in the
// cache folder. "" for the embedded default config, which has none.
func (c *Config) ExceptionsPath() string {
	if c.CacheDir == "" {
		return ""
	}
	return filepath.Join(c.CacheDir, ExceptionsFile)
}

// LoadExceptions reads the state file at path. A missing file is no
// exception. An unreadable or invalid file is an error naming the file
// (and the line of a syntax error, or the entry), so that the caller
// keeps its last good exceptions.
func LoadExceptions(path string) ([]Exception, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("rules: exceptions %s: %w", path, err)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, nil
	}
	var raw []exceptionJSON
	if err := json.Unmarshal(data, &raw); err != nil {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		line := 0
		switch {
		case errors.As(err, &se):
			line = 1 + bytes.Count(data[:min(int(se.Offset), len(data))], []byte("\n"))
		case errors.As(err, &te):
			line = 1 + bytes.Count(data[:min(int(te.Offset), len(data))], []byte("\n"))
		}
		if line > 0 {
			return nil, &ParseError{File: path, Line: line, Err: fmt.Errorf("exceptions: %w", err)}
		}
		return nil, fmt.Errorf("rules: exceptions %s: %w", path, err)
	}
	if len(raw) > maxExceptions {
		return nil, fmt.Errorf("rules: exceptions %s: %d entries, more than %d", path, len(raw), maxExceptions)
	}
	out := make([]Exception, 0, len(raw))
	for i, r := range raw {
		e := r.Exception
		h, err := NormalizeHost(e.Domain)
		if err != nil || h != e.Domain {
			return nil, fmt.Errorf("rules: exceptions %s: entry %d: invalid domain %q", path, i+1, e.Domain)
		}
		if e.Until.IsZero() {
			return nil, fmt.Errorf("rules: exceptions %s: entry %d (%s): no until", path, i+1, e.Domain)
		}
		if r.Client != "" {
			if e.Client, err = ParseClient(r.Client); err != nil {
				return nil, fmt.Errorf("rules: exceptions %s: entry %d (%s): %w", path, i+1, e.Domain, err)
			}
		}
		out = append(out, e)
	}
	return out, nil
}

// SaveExceptions replaces the state file at path with list, atomically
// (WriteFileAtomic), creating its folder when needed.
func SaveExceptions(path string, list []Exception) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("rules: exceptions %s: %w", path, err)
	}
	raw := make([]exceptionJSON, len(list))
	for i, e := range list {
		raw[i].Exception = e
		if e.Client.IsValid() {
			raw[i].Client = e.Client.String()
		}
	}
	data, err := json.MarshalIndent(raw, "", "  ")
	if err != nil {
		return err
	}
	return WriteFileAtomic(path, append(data, '\n'), 0o644)
}

// ParseClient parses a client network, "10.0.0.0/8", or one address, "10.1.2.3".
func ParseClient(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("invalid client %q (want an address or a CIDR such as 10.0.0.0/8)", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// AddException returns list with e, replacing an entry for the same
// domain, client and user, without the entries expired at now.
func AddException(list []Exception, e Exception, now time.Time) []Exception {
	out := slices.DeleteFunc(slices.Clone(list), func(x Exception) bool {
		return !now.Before(x.Until) || x.Domain == e.Domain && x.Client == e.Client && x.User == e.User
	})
	return append(out, e)
}

// RemoveException returns list without the entries for domain, and how
// many it removed.
func RemoveException(list []Exception, domain string) ([]Exception, int) {
	out := slices.DeleteFunc(slices.Clone(list), func(x Exception) bool { return x.Domain == domain })
	return out, len(list) - len(out)
}

// ExceptionDomain normalizes what an admin types for `sluice allow`: a
// domain, "*.domain", ".domain", or a URL (its host).
func ExceptionDomain(s string) (string, error) {
	s = strings.TrimSpace(s)
	if i := strings.Index(s, "://"); i >= 0 {
		s = s[i+3:]
		if j := strings.IndexAny(s, "/?#"); j >= 0 {
			s = s[:j]
		}
		if j := strings.LastIndexByte(s, '@'); j >= 0 {
			s = s[j+1:]
		}
		if h, _, ok := strings.Cut(s, ":"); ok && !strings.Contains(h, "]") {
			s = h
		}
	}
	s = strings.TrimPrefix(strings.TrimPrefix(s, "*."), ".")
	h, err := NormalizeHost(s)
	if err != nil {
		return "", err
	}
	if _, err := netip.ParseAddr(h); err == nil {
		return "", fmt.Errorf("rules: %q is an address; an exception names a domain", s)
	}
	return h, nil
}
