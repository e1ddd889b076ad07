package rules

import (
	"slices"
	"strings"
)

// Match is one list line that covers a host: the host itself or one of its
// parent domains.
type Match struct {
	// Category is the category the line belongs to.
	Category string
	// File and Line locate the entry.
	File string
	Line int
	// Entry is the normalized domain on that line.
	Entry string
	// Allow marks an exception entry (Adblock "@@||x^").
	Allow bool
}

// Explain answers "why is this blocked": every entry of every category in
// set that equals host or one of its parent domains, with its file and line,
// sorted by category, file and line. It re-reads the source files, so it is
// meant for the CLI (`sluice list test`, `sluice check`), not for the request
// path. An invalid host, or a file that cannot be read, yields no matches.
func Explain(set *Set, host string) []Match {
	if set == nil {
		return nil
	}
	h, err := NormalizeHost(host)
	if err != nil {
		return nil
	}
	want := map[string]bool{h: true}
	if !isIPLiteral(h) {
		for rest := h; ; {
			_, parent, ok := strings.Cut(rest, ".")
			if !ok {
				break
			}
			want[parent] = true
			rest = parent
		}
	}
	var out []Match
	for _, name := range mapKeys(set.Categories) {
		for _, src := range set.Categories[name].Sources {
			for _, file := range src.Files {
				f, err := openList(file)
				if err != nil {
					continue
				}
				_, _ = ParseListFormat(f, file, src.Source.Format, func(e Entry) {
					if want[e.Domain] {
						out = append(out, Match{Category: name, File: file, Line: e.Line, Entry: e.Domain, Allow: e.Allow})
					}
				})
				f.Close()
			}
		}
	}
	slices.SortStableFunc(out, func(a, b Match) int {
		if c := strings.Compare(a.Category, b.Category); c != 0 {
			return c
		}
		if c := strings.Compare(a.File, b.File); c != 0 {
			return c
		}
		return a.Line - b.Line
	})
	return out
}
