package rules

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// ListsDir is the folder beside the config where AddToCategory creates the
// file of a new category.
const ListsDir = "lists"

// ParseEntry reads a domain the way people paste one and returns it
// normalized (NormalizeHost): "example.com", "Example.COM.", "*.example.com",
// ".example.com", a URL ("https://www.youtube.com/watch?v=…" gives
// "www.youtube.com"), a host and path without scheme
// ("www.example.com/page"), a host and port, or an Adblock rule
// ("||example.com^"). Every entry covers its subdomains, so "*." adds
// nothing; it is dropped.
func ParseEntry(s string) (string, error) {
	in := s
	s = strings.TrimSpace(s)
	if strings.Contains(s, "://") {
		u, err := url.Parse(s)
		if err != nil || u.Hostname() == "" {
			return "", fmt.Errorf("%q: not a URL with a host", in)
		}
		s = u.Hostname()
	} else {
		s = strings.TrimPrefix(s, "||")
		if i := strings.IndexAny(s, "/?#^$"); i >= 0 {
			s = s[:i]
		}
		if h, port, err := net.SplitHostPort(s); err == nil && port != "" && strings.Trim(port, "0123456789") == "" {
			s = h
		}
	}
	s = strings.TrimPrefix(strings.TrimPrefix(s, "*."), ".")
	h, err := NormalizeHost(s)
	switch {
	case err != nil && s == in:
		return "", err // it names the host already
	case err != nil:
		return "", fmt.Errorf("%q: %w", in, err)
	}
	return h, nil
}

// ParseEntries is ParseEntry for each of args, without duplicates, in order.
func ParseEntries(args []string) ([]string, error) {
	var out []string
	for _, a := range args {
		h, err := ParseEntry(a)
		if err != nil {
			return nil, err
		}
		if !slices.Contains(out, h) {
			out = append(out, h)
		}
	}
	return out, nil
}

// ListFile is a plain list file of a category that AddToCategory and
// RemoveFromCategory edit, with the domains it holds.
type ListFile struct {
	Path    string
	Domains map[string]bool
}

// EditableFiles returns the plain-format regular files among the sources of
// category cat, in config order, with their domains. Folders, URLs, and
// files in another format (hosts, Adblock, dnsmasq, wildcard) are not edited.
func (c *Config) EditableFiles(cat string) ([]ListFile, error) {
	var out []ListFile
	for _, src := range c.Categories[cat] {
		if src.URL != "" {
			continue
		}
		fi, err := os.Stat(src.Path)
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		lf, format, err := readListFile(src.Path, src.Format)
		if err != nil {
			return nil, err
		}
		if format == FormatPlain || len(lf.Domains) == 0 {
			out = append(out, lf)
		}
	}
	return out, nil
}

// readListFile reads the blocked domains of the list file at path.
func readListFile(path, format string) (ListFile, string, error) {
	lf := ListFile{Path: path, Domains: map[string]bool{}}
	f, err := os.Open(path)
	if err != nil {
		return lf, "", err
	}
	defer f.Close()
	ls, err := ParseListFormat(f, path, format, func(e Entry) {
		if !e.Allow {
			lf.Domains[e.Domain] = true
		}
	})
	return lf, ls.Format, err
}

// AddResult is what AddToCategory did.
type AddResult struct {
	// File is the list file the domains went to.
	File string
	// Created is true when AddToCategory created File.
	Created bool
	// Source is the source text added to the category in the config; empty
	// when the category already had File.
	Source string
	// Added are the domains appended, Listed those File already held.
	Added, Listed []string
}

// AddToCategory adds domains (normalized, see ParseEntries) to the first
// plain list file of category cat in the config file cfg.File. When the
// category has none (or does not exist yet), lists/CAT.txt beside the config
// is created (or taken, when it is a plain list already) and added to the
// category in the config. Files are replaced atomically, keeping their
// comments and lines.
func AddToCategory(cfg *Config, cat string, domains []string) (AddResult, error) {
	var res AddResult
	files, err := cfg.EditableFiles(cat)
	if err != nil {
		return res, err
	}
	var lf ListFile
	if len(files) > 0 {
		lf = files[0]
	} else if lf, err = createCategoryFile(cfg, cat, &res); err != nil {
		return res, err
	}
	res.File = lf.Path
	for _, d := range domains {
		if lf.Domains[d] {
			res.Listed = append(res.Listed, d)
		} else {
			res.Added = append(res.Added, d)
		}
	}
	if _, err := AddDomains(lf.Path, res.Added); err != nil {
		return res, err
	}
	return res, nil
}

// createCategoryFile creates lists/CAT.txt beside the config when missing
// and adds it to the category in the config.
func createCategoryFile(cfg *Config, cat string, res *AddResult) (ListFile, error) {
	if cfg.File == "" {
		return ListFile{}, errors.New("no config file to add the category to")
	}
	if err := checkCategoryName(cat); err != nil {
		return ListFile{}, err
	}
	rel := ListsDir + "/" + cat + ".txt"
	path := filepath.Join(filepath.Dir(cfg.File), filepath.FromSlash(rel))
	lf := ListFile{Path: path, Domains: map[string]bool{}}
	if _, err := os.Stat(path); err == nil {
		got, format, err := readListFile(path, "")
		if err != nil {
			return lf, err
		}
		if format != FormatPlain && len(got.Domains) > 0 {
			return lf, fmt.Errorf("%s exists and is a %s list, not plain; add it with 'sluice list import' or move it away", path, format)
		}
		lf = got
	} else {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return lf, err
		}
		header := fmt.Sprintf("# Category %s: one domain a line; each also covers its subdomains.\n# Edited by 'sluice list add' and 'sluice list rm'; comments are kept.\n", cat)
		if err := WriteFileAtomic(path, []byte(header), 0o644); err != nil {
			return lf, err
		}
		res.Created = true
	}
	if err := AddCategorySource(cfg.File, cat, rel); err != nil {
		return lf, err
	}
	res.Source = rel
	return lf, nil
}

// RemoveResult is what RemoveFromCategory did.
type RemoveResult struct {
	// Removed lists each domain found, with the file it was removed from
	// (a domain in two files appears twice).
	Removed []Removal
	// Lines counts the lines removed.
	Lines int
	// Missing are the domains in no editable file of the category.
	Missing []Removal
}

// Removal is one domain RemoveFromCategory removed, or could not.
type Removal struct {
	Domain string
	// File is the file it was removed from.
	File string
	// From, for a missing domain, lists "file:line" of the category's
	// entries for exactly that domain in sources that are not edited (URLs,
	// folders, other formats); empty when the category does not list it.
	From []string
}

// RemoveFromCategory removes the lines that list exactly domains
// (normalized) from every plain list file of category cat, keeping every
// other line; a category without sources is an error.
func RemoveFromCategory(cfg *Config, cat string, domains []string) (RemoveResult, error) {
	var res RemoveResult
	if _, ok := cfg.Categories[cat]; !ok {
		return res, fmt.Errorf("category %q has no sources in %s", cat, cfg.File)
	}
	files, err := cfg.EditableFiles(cat)
	if err != nil {
		return res, err
	}
	var missing []string
	for _, d := range domains {
		found := false
		for _, lf := range files {
			if lf.Domains[d] {
				res.Removed = append(res.Removed, Removal{Domain: d, File: lf.Path})
				found = true
			}
		}
		if !found {
			missing = append(missing, d)
		}
	}
	for _, lf := range files {
		var drop []string
		for _, d := range domains {
			if lf.Domains[d] {
				drop = append(drop, d)
			}
		}
		if len(drop) == 0 {
			continue
		}
		n, err := RemoveDomains(lf.Path, drop)
		if err != nil {
			return res, err
		}
		res.Lines += n
	}
	if len(missing) > 0 {
		set, err := LoadSet(cfg)
		for _, d := range missing {
			m := Removal{Domain: d}
			if err == nil {
				for _, x := range Explain(set, d) {
					if x.Category == cat && x.Entry == d && !x.Allow {
						m.From = append(m.From, fmt.Sprintf("%s:%d", x.File, x.Line))
					}
				}
			}
			res.Missing = append(res.Missing, m)
		}
	}
	return res, nil
}

// ParseSourceArg reads a source as `sluice list import` takes it: an
// http(s) URL, or a file or folder that exists. It returns the source and
// the text to write in the config: the URL, or the path relative to the
// config's folder when it lies inside it, absolute otherwise.
func (c *Config) ParseSourceArg(arg string) (Source, string, error) {
	if strings.Contains(arg, "://") {
		u, err := url.Parse(arg)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return Source{}, "", fmt.Errorf("invalid list URL %q (want http:// or https://)", redactURL(arg))
		}
		return Source{URL: arg, Refresh: DefaultRefresh}, arg, nil
	}
	abs, err := filepath.Abs(arg)
	if err != nil {
		return Source{}, "", err
	}
	if _, err := os.Stat(abs); err != nil {
		return Source{}, "", err
	}
	text := abs
	if rel, err := filepath.Rel(filepath.Dir(c.File), abs); err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		text = filepath.ToSlash(rel)
	}
	return Source{Path: abs}, text, nil
}

// HasSource tells whether category cat already has the source src (the
// same URL, or the same path).
func (c *Config) HasSource(cat string, src Source) bool {
	return slices.ContainsFunc(c.Categories[cat], func(s Source) bool {
		return s.URL != "" && s.URL == src.URL || s.Path != "" && s.Path == src.Path
	})
}

// CategorySource is a source with the category it belongs to.
type CategorySource struct {
	Category string
	Source   Source
}

// RemoteSources returns the URL sources of every category, or of category
// cat when it is not empty, sorted by category and each URL once. A named
// category without sources is an error.
func (c *Config) RemoteSources(cat string) ([]CategorySource, error) {
	if _, ok := c.Categories[cat]; cat != "" && !ok {
		return nil, fmt.Errorf("category %q has no sources", cat)
	}
	var out []CategorySource
	seen := map[string]bool{}
	for _, name := range mapKeys(c.Categories) {
		if cat != "" && name != cat {
			continue
		}
		for _, src := range c.Categories[name] {
			if src.URL != "" && !seen[src.URL] {
				seen[src.URL] = true
				out = append(out, CategorySource{name, src})
			}
		}
	}
	return out, nil
}

// ImportSource adds the source arg (see ParseSourceArg) to category cat in
// the config file cfg.File, creating the category when new. added is false
// when the category already has that source. The edited config must still
// load; otherwise the error says so (the edit stays, for the admin to see).
func ImportSource(cfg *Config, cat, arg string) (src Source, text string, added bool, err error) {
	if src, text, err = cfg.ParseSourceArg(arg); err != nil {
		return src, text, false, err
	}
	if cfg.HasSource(cat, src) {
		return src, text, false, nil
	}
	if err := AddCategorySource(cfg.File, cat, text); err != nil {
		return src, text, false, err
	}
	if _, err := LoadConfig(cfg.File); err != nil {
		return src, text, true, fmt.Errorf("source added, but the config no longer loads: %w", err)
	}
	return src, text, true, nil
}
