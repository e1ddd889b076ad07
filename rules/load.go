package rules

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
)

// Files of a UT1/squidGuard category folder.
const (
	// UT1Domains is the file of domains that makes a folder a category.
	UT1Domains = "domains"
)

// ut1Skipped are the files of a UT1 category folder that hold no domains:
// URL prefixes and regular expressions (not used by a domain filter), and
// the "usage" note.
var ut1Skipped = []string{"urls", "expressions", "usage"}

// Load reads and validates the config at path, then every category source
// it names: LoadConfig followed by LoadSet.
func Load(path string) (*Set, error) {
	cfg, err := LoadConfig(path)
	if err != nil {
		return nil, err
	}
	return LoadSet(cfg)
}

// LoadOptions changes how LoadSet reads sources.
type LoadOptions struct {
	// LastGood reads the last good copy (see WriteLastGood) of a local
	// source that is unusable now: missing, unreadable, empty or not a
	// list. A running server reloads with it, so that a list being
	// rewritten or deleted never empties its category. Default false: the
	// source's entries are missing, as at start.
	LastGood bool
}

// LoadSet reads every category source of cfg into a Set: the sources under
// categories, each category of the category_dirs folders (all of them, or
// those named by only), and the built-in lists that rules use. A source that cannot be read, or a remote source
// not downloaded yet, is recorded in its SourceStats.Err and leaves its
// category without those entries; it does not fail the load (Set.SourceErrors
// tells which of them make the Set unfit to serve). Every category named by
// a rule is present in the Set, possibly empty.
func LoadSet(cfg *Config) (*Set, error) {
	return LoadSetWith(cfg, LoadOptions{})
}

// LoadSetWith is LoadSet with options.
func LoadSetWith(cfg *Config, opts LoadOptions) (*Set, error) {
	if cfg == nil {
		return nil, errors.New("rules: nil config")
	}
	set := &Set{Config: cfg, Categories: make(map[string]*CategoryList)}
	get := func(name string) *CategoryList {
		cl := set.Categories[name]
		if cl == nil {
			cl = &CategoryList{Name: name}
			set.Categories[name] = cl
		}
		return cl
	}
	// Categories are read in parallel, one goroutine per category at a
	// time and at most GOMAXPROCS at once: a gateway's lists hold millions
	// of lines. Within a category the sources keep their order.
	jobs := map[string][]func(cl *CategoryList) SourceStats{}
	var order []string
	add := func(name string, job func(cl *CategoryList) SourceStats) {
		if _, ok := jobs[name]; !ok {
			order = append(order, name)
			get(name)
		}
		jobs[name] = append(jobs[name], job)
	}
	for _, name := range mapKeys(cfg.Categories) {
		for _, src := range cfg.Categories[name] {
			add(name, func(cl *CategoryList) SourceStats { return readSource(cfg, cl, src) })
		}
	}
	used := cfg.UsedCategories()
	for _, cd := range cfg.CategoryDirs {
		for _, cat := range ut1Categories(cd, used) {
			add(cat.name, func(cl *CategoryList) SourceStats { return readUT1Category(cl, cat.dir, cd.Line) })
		}
	}
	for _, r := range cfg.Rules {
		for _, p := range r.Dests {
			if name := p.Host; p.Kind == Category && IsBuiltin(name) && jobs[name] == nil {
				add(name, func(cl *CategoryList) SourceStats { return readBuiltin(cl, name) })
			}
		}
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	for _, name := range order {
		cl := set.Categories[name]
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			for _, job := range jobs[name] {
				nb, na := len(cl.Block), len(cl.Allow)
				st := job(cl)
				if opts.LastGood && st.Problem() != nil && st.Source.URL == "" {
					readLastGood(cfg, cl, &st)
				}
				st.block, st.allow = [2]int{nb, len(cl.Block)}, [2]int{na, len(cl.Allow)}
				cl.Sources = append(cl.Sources, st)
			}
		})
	}
	wg.Wait()
	for name := range used {
		get(name)
	}
	return set, nil
}

// UsedCategories returns the names of the categories the rules refer to.
func (c *Config) UsedCategories() map[string]bool {
	used := map[string]bool{}
	for _, r := range c.Rules {
		for _, p := range r.Dests {
			if p.Kind == Category {
				used[p.Host] = true
			}
		}
	}
	return used
}

// ErrNotDownloaded means a remote source has no cached copy yet.
var ErrNotDownloaded = errors.New("not downloaded yet")

// Problem tells why a source is unfit to serve from: it could not be read
// (missing, unreadable, not a list, a remote list not downloaded), or it
// gave no entry at all. Nil when it is usable.
func (st SourceStats) Problem() error {
	if st.Err != nil {
		return st.Err
	}
	if st.Entries == 0 {
		return fmt.Errorf("no entry in %s (%d invalid lines)", strings.Join(st.Files, ", "), st.Invalid)
	}
	return nil
}

// SourceErrors returns one *ParseError, naming the config file and the
// line that declared the source, for every source that a rule depends on
// and that is unusable (SourceStats.Problem) with no last good copy in its
// place, unless the source is marked optional. A category that a rule uses
// and that has no source at all is one too. `serve` refuses to start on
// them; a reload that has them keeps the running rules.
func (s *Set) SourceErrors() []error {
	cfg := s.Config
	file := cfg.File
	if file == "" {
		file = "default.yaml"
	}
	var errs []error
	used := cfg.UsedCategories()
	for _, name := range mapKeys(used) {
		cl := s.Categories[name]
		if cl == nil || len(cl.Sources) == 0 {
			line := 0
			for _, r := range cfg.Rules {
				if slices.ContainsFunc(r.Dests, func(p Pattern) bool { return p.Kind == Category && p.Host == name }) {
					line = r.Line
					break
				}
			}
			errs = append(errs, &ParseError{File: file, Line: line, Err: fmt.Errorf("category %q: no source to read", name)})
			continue
		}
		for _, st := range cl.Sources {
			err := st.Problem()
			if err == nil || st.LastGood != "" || st.Source.Optional {
				continue
			}
			errs = append(errs, &ParseError{File: file, Line: st.Source.Line, Err: &SourceError{
				Category: name, Source: st.Source, Err: err}})
		}
	}
	return errs
}

// SourceError is an unusable source of a category a rule uses.
type SourceError struct {
	Category string
	Source   Source
	Err      error
}

func (e *SourceError) Error() string {
	hint := "mark it {file: PATH, optional: true} if the rules may do without it"
	if e.Source.URL != "" {
		hint = "run 'sluice list update', or mark it {url: URL, optional: true}"
	}
	// The cause may name the source again ("URL: not downloaded yet",
	// "stat PATH: no such file or directory").
	why := strings.TrimPrefix(bare(e.Err), e.Source.String()+": ")
	var pe *fs.PathError
	if errors.As(e.Err, &pe) && pe.Path == e.Source.Path {
		why = pe.Err.Error()
	}
	return fmt.Sprintf("category %s: source %s is unusable: %s (%s)", e.Category, e.Source, why, hint)
}

func (e *SourceError) Unwrap() error { return e.Err }

// CachePath returns the file that holds the downloaded copy of a remote
// source: a stable name derived from the URL (a hash prefix and the host)
// in CacheDir, or in "cache" beside the config when CacheDir is empty. For a
// path source it returns the path.
func (c *Config) CachePath(src Source) string {
	if src.URL == "" {
		return src.Path
	}
	dir := c.cacheDir()
	sum := sha256.Sum256([]byte(src.URL))
	host := "list"
	if u, err := url.Parse(src.URL); err == nil && u.Hostname() != "" {
		host = u.Hostname()
	}
	var b strings.Builder
	for _, r := range strings.ToLower(host) {
		if 'a' <= r && r <= 'z' || '0' <= r && r <= '9' || r == '.' || r == '-' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
		if b.Len() >= 64 {
			break
		}
	}
	return filepath.Join(dir, hex.EncodeToString(sum[:8])+"-"+b.String()+".list")
}

// cacheDir is CacheDir, or "cache" beside the config when it is empty.
func (c *Config) cacheDir() string {
	if c.CacheDir != "" {
		return c.CacheDir
	}
	base := "."
	if c.File != "" {
		base = filepath.Dir(c.File)
	}
	return filepath.Join(base, "cache")
}

// String returns the source's URL or path.
func (s Source) String() string {
	if s.URL != "" {
		return redactURL(s.URL)
	}
	return s.Path
}

// sourceFiles lists the files a source stands for: the cache file of a URL,
// the file itself, or the regular files of a folder (hidden files and UT1
// urls/expressions/usage files left out and counted in skipped).
func sourceFiles(cfg *Config, src Source) (files []string, skipped int, err error) {
	if src.URL != "" {
		f := cfg.CachePath(src)
		if _, err := os.Stat(f); err != nil {
			return nil, 0, fmt.Errorf("rules: %s: %w (no cache file %s)", src, ErrNotDownloaded, f)
		}
		return []string{f}, 0, nil
	}
	fi, err := os.Stat(src.Path)
	if err != nil {
		return nil, 0, fmt.Errorf("rules: %w", err)
	}
	if !fi.IsDir() {
		return []string{src.Path}, 0, nil
	}
	ents, err := os.ReadDir(src.Path)
	if err != nil {
		return nil, 0, fmt.Errorf("rules: %w", err)
	}
	for _, e := range ents { // ReadDir sorts by name
		name := e.Name()
		if strings.HasPrefix(name, ".") {
			continue
		}
		if slices.Contains(ut1Skipped, name) {
			skipped++
			continue
		}
		p := filepath.Join(src.Path, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			files = append(files, p)
		}
	}
	return files, skipped, nil
}

// readSource reads one configured source into cl.
func readSource(cfg *Config, cl *CategoryList, src Source) SourceStats {
	st := SourceStats{Source: src}
	files, skipped, err := sourceFiles(cfg, src)
	st.Skipped = skipped
	if err != nil {
		st.Err = err
		return st
	}
	for _, f := range files {
		readFile(cl, f, src.Format, &st)
	}
	return st
}

// readFile parses one list file in format ("": detected) into cl and adds
// its figures to st. On error, the file's entries are dropped and st.Err
// keeps the first error.
func readFile(cl *CategoryList, file, format string, st *SourceStats) {
	st.File = file
	st.Files = append(st.Files, file)
	f, err := openList(file)
	if err != nil {
		if st.Err == nil {
			st.Err = fmt.Errorf("rules: %w", err)
		}
		return
	}
	defer f.Close()
	nb, na := len(cl.Block), len(cl.Allow)
	ls, err := ParseListFormat(f, file, format, func(e Entry) {
		if e.Allow {
			cl.Allow = append(cl.Allow, e.Domain)
		} else {
			cl.Block = append(cl.Block, e.Domain)
		}
	})
	st.Format = ls.Format
	st.Skipped += ls.Skipped
	st.Invalid += ls.Invalid
	for _, e := range ls.Errors {
		if len(st.Errors) < MaxListErrors {
			st.Errors = append(st.Errors, e)
		}
	}
	if err != nil {
		cl.Block, cl.Allow = cl.Block[:nb], cl.Allow[:na]
		if st.Err == nil {
			st.Err = err
		}
		return
	}
	st.Entries += ls.Entries
}

// ut1Category is one category folder found in a CategoryDir.
type ut1Category struct{ name, dir string }

// ut1Categories lists the categories of a UT1/squidGuard folder: every
// sub-folder (or symbolic link to one, which aliases another category) that
// holds a "domains" file, restricted to cd.Only when set. A sub-folder named
// by cd.Only or by a rule (in used) is listed even without a "domains" file,
// so that its absence is reported, not silently an empty category.
func ut1Categories(cd CategoryDir, used map[string]bool) []ut1Category {
	ents, err := os.ReadDir(cd.Path)
	if err != nil {
		return nil
	}
	var out []ut1Category
	for _, e := range ents {
		name := e.Name()
		if strings.HasPrefix(name, ".") || checkCategoryName(name) != nil {
			continue
		}
		if len(cd.Only) > 0 && !slices.Contains(cd.Only, name) {
			continue
		}
		dir := filepath.Join(cd.Path, name)
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() { // Stat follows symlinks
			continue
		}
		if fi, err := os.Stat(filepath.Join(dir, UT1Domains)); (err != nil || !fi.Mode().IsRegular()) &&
			!used[name] && !slices.Contains(cd.Only, name) {
			continue
		}
		out = append(out, ut1Category{name, dir})
	}
	return out
}

// readUT1Category reads the domains file of one UT1 category folder; its
// urls and expressions files are counted in Skipped (one per file).
func readUT1Category(cl *CategoryList, dir string, line int) SourceStats {
	st := SourceStats{Source: Source{Path: dir, Format: FormatPlain, Line: line}}
	for _, name := range ut1Skipped[:2] {
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			st.Skipped++
		} else if !errors.Is(err, fs.ErrNotExist) && st.Err == nil {
			st.Err = fmt.Errorf("rules: %w", err)
		}
	}
	readFile(cl, filepath.Join(dir, UT1Domains), st.Source.Format, &st)
	return st
}
