package rules

// Set is everything the filter engine compiles: a config and the entries of
// every category it can refer to. A Set is built by Load and not changed after.
type Set struct {
	// Config is the parsed configuration.
	Config *Config
	// Categories maps a category name to its entries. Every category named by
	// a rule is present, possibly empty (a source that could not be read yet).
	Categories map[string]*CategoryList
}

// CategoryList is the merged entries of one category.
type CategoryList struct {
	// Name is the category name.
	Name string
	// Block holds normalized domains; each also covers its subdomains.
	Block []string
	// Allow holds normalized exception domains (Adblock "@@||x^"), which
	// take the matching domain and its subdomains out of the category.
	Allow []string
	// Sources reports what each source contributed.
	Sources []SourceStats
}

// Unique returns the category's entries as a person counts them: each
// domain once, in the order first loaded, however many of its sources (or
// lines of one source) list it. Block and Allow keep every occurrence, so
// that each source's share stays whole for its last good copy.
func (cl *CategoryList) Unique() (block, allow []string) {
	return uniqueStrings(cl.Block), uniqueStrings(cl.Allow)
}

// uniqueStrings returns s without its repeats, first occurrences kept in order.
func uniqueStrings(s []string) []string {
	seen := make(map[string]struct{}, len(s))
	out := make([]string, 0, len(s))
	for _, v := range s {
		if _, dup := seen[v]; !dup {
			seen[v] = struct{}{}
			out = append(out, v)
		}
	}
	return out
}

// SourceStats reports the outcome of reading one source.
type SourceStats struct {
	// Source is the configured source.
	Source Source
	// File is the last file that was read (for a URL, its cache file).
	File string
	// Files lists every file read, in order: one for a file or URL source,
	// the regular files of a folder source, "domains" of a UT1 category.
	Files []string
	// Format is the detected list format of the last file read: "plain",
	// "hosts", "adblock", "dnsmasq".
	Format string
	// Entries counts the entries taken.
	Entries int
	// Skipped counts lines that are valid but not usable here (cosmetic or
	// path rules, localhost names), plus one for each UT1 urls/expressions
	// file left unread.
	Skipped int
	// Invalid counts lines that could not be parsed.
	Invalid int
	// Errors holds the first few invalid lines as *ParseError.
	Errors []error
	// Err is set when the source could not be read at all; its category
	// then lacks these entries, and the rest of the Set is still good.
	Err error
	// LastGood is the last good copy read in place of the source, which is
	// unusable now (see LoadOptions.LastGood); Entries then counts the
	// copy's entries. Empty when the source itself was read.
	LastGood string

	// block and allow are the ranges of CategoryList.Block and .Allow
	// that this source contributed.
	block, allow [2]int
}
