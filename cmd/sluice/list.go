package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/sluiceproxy/sluice/proxy/server"
	"github.com/sluiceproxy/sluice/rules"
)

func init() { extraCommands = append(extraCommands, listCmd) }

// listsDir is the folder beside the config where `list add` creates the
// file of a new category.
const listsDir = "lists"

func listCmd() *cobra.Command {
	var cfgPath string
	cmd := &cobra.Command{
		Use:   "list [--config FILE]",
		Short: "Show, edit, import, update and search category lists",
		Long: `Without a subcommand, list every category with its entry count, its
sources, when each remote source was last refreshed, and any error.`,
		Example: `  sluice list -c sluice.yaml
  sluice list -c sluice.yaml add social tiktok.com instagram.com
  sluice list -c sluice.yaml test www.tiktok.com
  sluice list -c sluice.yaml update`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cfgPath)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			// As a running server reloads: an unusable local source shows
			// its error and the last good copy the server keeps serving.
			set, err := rules.LoadSetWith(cfg, rules.LoadOptions{LastGood: true})
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			printSummary(cmd.OutOrStdout(), set, time.Now())
			return nil
		},
	}
	cmd.PersistentFlags().StringVarP(&cfgPath, "config", "c", "", "config file (default: the embedded default config)")
	cmd.AddCommand(listShowCmd(&cfgPath), listAddCmd(&cfgPath), listRmCmd(&cfgPath),
		listImportCmd(&cfgPath), listUpdateCmd(&cfgPath), listTestCmd(&cfgPath))
	return cmd
}

// editConfig returns the config to edit; editing needs a real file.
func editConfig(cfgPath string) (*rules.Config, error) {
	if cfgPath == "" {
		return nil, errors.New("--config FILE is required to change lists")
	}
	return rules.LoadConfig(cfgPath)
}

// loadConfig reads the config at path, or the embedded default when path is "".
func loadConfig(path string) (*rules.Config, error) {
	if path == "" {
		return rules.Default(), nil
	}
	return rules.LoadConfig(path)
}

// printSummary writes one block per category: entries, then each source.
func printSummary(w io.Writer, set *rules.Set, now time.Time) {
	names := sortedNames(set.Categories)
	if len(names) == 0 {
		fmt.Fprintln(w, "no categories")
	}
	used := set.Config.UsedCategories()
	failed := map[string]bool{}
	for _, e := range set.SourceErrors() {
		var se *rules.SourceError
		if errors.As(e, &se) {
			failed[se.Category] = true
		}
	}
	for _, name := range names {
		cl := set.Categories[name]
		fmt.Fprintf(w, "%s: %s", name, entries(len(cl.Block)))
		if len(cl.Allow) > 0 {
			fmt.Fprintf(w, ", %s %s", thousands(len(cl.Allow)), plural(len(cl.Allow), "exception", "exceptions"))
		}
		fmt.Fprintf(w, ", %d %s", len(cl.Sources), plural(len(cl.Sources), "source", "sources"))
		switch {
		case failed[name]:
			fmt.Fprint(w, "  ERROR: a source the rules need is unusable; serve refuses to start")
		case len(cl.Block)+len(cl.Allow) == 0 && used[name]:
			fmt.Fprint(w, "  EMPTY: the rules use it, and it blocks nothing")
		case len(cl.Block)+len(cl.Allow) == 0:
			fmt.Fprint(w, "  EMPTY")
		case slices.ContainsFunc(cl.Sources, func(st rules.SourceStats) bool { return st.Problem() != nil }):
			fmt.Fprint(w, "  ERROR: a source is unusable")
		}
		fmt.Fprintln(w)
		for _, st := range cl.Sources {
			printSource(w, set.Config, st, now)
		}
	}
	// The built-in lists no rule uses yet, so that they can be found.
	for _, name := range rules.Builtins() {
		if _, used := set.Categories[name]; used {
			continue
		}
		if cl, ok := rules.LoadBuiltin(name); ok {
			fmt.Fprintf(w, "%s: %s, built in, used by no rule (block: [%s])\n", name, entries(len(cl.Block)), name)
		}
	}
}

func printSource(w io.Writer, cfg *rules.Config, st rules.SourceStats, now time.Time) {
	src := st.Source
	kind := "file"
	if src.URL != "" {
		kind = "url"
	} else if rules.IsBuiltin(src.Path) {
		kind = "built-in list"
	} else if fi, err := os.Stat(src.Path); err == nil && fi.IsDir() {
		kind = "dir"
	}
	fmt.Fprintf(w, "  %s %s: %s", kind, src, entries(st.Entries))
	if src.Optional {
		fmt.Fprint(w, " (optional)")
	}
	if st.Format != "" {
		fmt.Fprintf(w, " (%s)", st.Format)
	}
	if st.Skipped > 0 {
		fmt.Fprintf(w, ", %s skipped", thousands(st.Skipped))
	}
	if st.Invalid > 0 {
		fmt.Fprintf(w, ", %s invalid", thousands(st.Invalid))
	}
	fmt.Fprintln(w)
	if src.URL != "" {
		refresh := src.Refresh
		if refresh <= 0 {
			refresh = rules.DefaultRefresh
		}
		m, err := server.ReadFetchMeta(cfg, src)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			fmt.Fprintf(w, "      never downloaded; refreshed every %s (run 'sluice list update')\n", period(refresh))
		case err != nil:
			fmt.Fprintf(w, "      %v\n", err)
		default:
			if m.FetchedAt.IsZero() {
				fmt.Fprintf(w, "      never downloaded; refreshed every %s\n", period(refresh))
			} else {
				fmt.Fprintf(w, "      refreshed %s (%s ago), every %s\n", timeStamp(m.FetchedAt), agoString(now, m.FetchedAt), period(refresh))
			}
			if m.LastError != "" {
				fmt.Fprintf(w, "      last attempt %s failed: %s\n", timeStamp(m.LastAttempt), m.LastError)
			}
		}
	}
	if err := st.Problem(); err != nil && (src.URL == "" || !errors.Is(err, rules.ErrNotDownloaded)) {
		fmt.Fprintf(w, "      ERROR: %v\n", err)
	}
	if st.LastGood != "" {
		fmt.Fprintf(w, "      a running proxy keeps its last good copy: %s (%s)\n", entries(st.Entries), st.LastGood)
	}
	for _, e := range st.Errors {
		fmt.Fprintf(w, "      invalid: %v\n", e)
	}
}

func listShowCmd(cfgPath *string) *cobra.Command {
	var grep string
	cmd := &cobra.Command{
		Use:               "show CATEGORY [--grep TEXT]",
		ValidArgsFunction: completeCategories(cfgPath),
		Short:             "Print the entries of a category, one a line (exceptions marked)",
		Long: `Print the entries of a category, one a line, as loaded (normalized, from
every source). Exceptions are printed as "@@DOMAIN". With --grep, only the
entries that contain TEXT, and exit status 1 when none does.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			set, err := loadSet(*cfgPath)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			cl, err := findCategory(set, args[0])
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			grep = strings.ToLower(grep)
			w := cmd.OutOrStdout()
			n := 0
			for _, d := range cl.Block {
				if strings.Contains(d, grep) {
					fmt.Fprintln(w, d)
					n++
				}
			}
			for _, d := range cl.Allow {
				if strings.Contains(d, grep) {
					fmt.Fprintln(w, "@@"+d)
					n++
				}
			}
			if grep != "" && n == 0 {
				return &exitError{code: 1}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&grep, "grep", "", "only entries that contain TEXT")
	return cmd
}

func findCategory(set *rules.Set, name string) (*rules.CategoryList, error) {
	if cl, ok := set.Categories[name]; ok {
		return cl, nil
	}
	if cl, ok := rules.LoadBuiltin(name); ok {
		return cl, nil
	}
	return nil, fmt.Errorf("unknown category %q (known: %s)", name, strings.Join(sortedNames(set.Categories), ", "))
}

// localFile is a plain list file of a category that `list add` and
// `list rm` may edit, with the domains it holds.
type localFile struct {
	path    string
	domains map[string]bool
}

// localFiles returns the plain-format regular files among the category's
// sources, in config order. Folders, URLs, and files in another format
// (hosts, Adblock, dnsmasq) are not edited.
func localFiles(cfg *rules.Config, cat string) ([]localFile, error) {
	var out []localFile
	for _, src := range cfg.Categories[cat] {
		if src.URL != "" {
			continue
		}
		fi, err := os.Stat(src.Path)
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		lf, format, err := readLocal(src.Path)
		if err != nil {
			return nil, err
		}
		if format == rules.FormatPlain || len(lf.domains) == 0 {
			out = append(out, lf)
		}
	}
	return out, nil
}

func readLocal(path string) (localFile, string, error) {
	lf := localFile{path: path, domains: map[string]bool{}}
	f, err := os.Open(path)
	if err != nil {
		return lf, "", err
	}
	defer f.Close()
	ls, err := rules.ParseList(f, path, func(e rules.Entry) {
		if !e.Allow {
			lf.domains[e.Domain] = true
		}
	})
	return lf, ls.Format, err
}

// normalizeArgs normalizes the domains given on the command line.
func normalizeArgs(args []string) ([]string, error) {
	var out []string
	for _, a := range args {
		h, err := rules.NormalizeHost(strings.TrimPrefix(strings.TrimSpace(a), "."))
		if err != nil {
			return nil, fmt.Errorf("%q: %w", a, err)
		}
		if !slices.Contains(out, h) {
			out = append(out, h)
		}
	}
	return out, nil
}

func listAddCmd(cfgPath *string) *cobra.Command {
	return &cobra.Command{
		Use:               "add CATEGORY DOMAIN...",
		ValidArgsFunction: completeCategories(cfgPath),
		Short:             "Add domains to a category's local list file (created when new)",
		Long: `Add domains to the first plain list file of the category. When the
category has none (or does not exist yet), lists/CATEGORY.txt is created
beside the config and added to its categories. The file is replaced
atomically; comments, order and existing lines are kept. Each domain also
covers its subdomains. A running proxy picks the change up on its own.`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			e, err := readEdit(*cfgPath, args, false)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			cfg, cat, domains, files := e.cfg, e.cat, e.domains, e.files
			w := cmd.OutOrStdout()
			var lf localFile
			if len(files) > 0 {
				lf = files[0]
			} else {
				if lf, err = createCategoryFile(w, cfg, cat); err != nil {
					return &exitError{code: 2, err: err}
				}
			}
			var fresh []string
			for _, d := range domains {
				if lf.domains[d] {
					fmt.Fprintf(w, "  %s (already listed)\n", d)
				} else {
					fmt.Fprintf(w, "+ %s\n", d)
					fresh = append(fresh, d)
				}
			}
			n, err := rules.AddDomains(lf.path, fresh)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			fmt.Fprintf(w, "%s: %d added to %s\n", cat, n, lf.path)
			return nil
		},
	}
}

// createCategoryFile creates lists/CAT.txt beside the config when missing
// and adds it to the category in the config.
func createCategoryFile(w io.Writer, cfg *rules.Config, cat string) (localFile, error) {
	if cfg.File == "" {
		return localFile{}, errors.New("no config file to add the category to")
	}
	if _, err := rules.ParsePattern(rules.CategoryPrefix + cat); err != nil { // checks the name
		return localFile{}, err
	}
	rel := listsDir + "/" + cat + ".txt"
	path := filepath.Join(filepath.Dir(cfg.File), filepath.FromSlash(rel))
	lf := localFile{path: path, domains: map[string]bool{}}
	if _, err := os.Stat(path); err == nil {
		got, format, err := readLocal(path)
		if err != nil {
			return lf, err
		}
		if format != rules.FormatPlain && len(got.domains) > 0 {
			return lf, fmt.Errorf("%s exists and is a %s list, not plain; add it with 'sluice list import' or move it away", path, format)
		}
		lf = got
	} else {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return lf, err
		}
		header := fmt.Sprintf("# Category %s: one domain a line; each also covers its subdomains.\n# Edited by 'sluice list add' and 'sluice list rm'; comments are kept.\n", cat)
		if err := rules.WriteFileAtomic(path, []byte(header), 0o644); err != nil {
			return lf, err
		}
		fmt.Fprintf(w, "created %s\n", path)
	}
	if err := rules.AddCategorySource(cfg.File, cat, rel); err != nil {
		return lf, err
	}
	fmt.Fprintf(w, "added %s to category %s in %s\n", rel, cat, cfg.File)
	return lf, nil
}

func listRmCmd(cfgPath *string) *cobra.Command {
	return &cobra.Command{
		Use:               "rm CATEGORY DOMAIN...",
		ValidArgsFunction: completeCategories(cfgPath),
		Short:             "Remove domains from a category's local list files",
		Long: `Remove the lines that list exactly these domains from every plain list
file of the category, keeping every other line. A domain that comes from a
remote source, a folder or a file in another format is reported, not removed.`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			e, err := readEdit(*cfgPath, args, true)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			cfg, cat, domains, files := e.cfg, e.cat, e.domains, e.files
			w := cmd.OutOrStdout()
			var missing []string
			for _, d := range domains {
				found := false
				for _, lf := range files {
					if lf.domains[d] {
						fmt.Fprintf(w, "- %s (%s)\n", d, lf.path)
						found = true
					}
				}
				if !found {
					missing = append(missing, d)
				}
			}
			total := 0
			for _, lf := range files {
				var drop []string
				for _, d := range domains {
					if lf.domains[d] {
						drop = append(drop, d)
					}
				}
				if len(drop) == 0 {
					continue
				}
				n, err := rules.RemoveDomains(lf.path, drop)
				if err != nil {
					return &exitError{code: 2, err: err}
				}
				total += n
			}
			if len(missing) > 0 {
				reportMissing(w, cfg, cat, missing)
			}
			fmt.Fprintf(w, "%s: %d removed\n", cat, total)
			return nil
		},
	}
}

// reportMissing says, for domains not in a local file, where the category
// takes them from, if anywhere.
func reportMissing(w io.Writer, cfg *rules.Config, cat string, missing []string) {
	set, err := rules.LoadSet(cfg)
	for _, d := range missing {
		var where []string
		if err == nil {
			for _, m := range rules.Explain(set, d) {
				if m.Category == cat && m.Entry == d && !m.Allow {
					where = append(where, fmt.Sprintf("%s:%d", m.File, m.Line))
				}
			}
		}
		if len(where) > 0 {
			fmt.Fprintf(w, "  %s: not in a local file; it comes from %s\n", d, strings.Join(where, ", "))
		} else {
			fmt.Fprintf(w, "  %s: not listed in %s\n", d, cat)
		}
	}
}

func listImportCmd(cfgPath *string) *cobra.Command {
	return &cobra.Command{
		Use: "import CATEGORY FILE|DIR|URL",
		ValidArgsFunction: func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
			if len(args) == 1 {
				return nil, cobra.ShellCompDirectiveDefault // FILE|DIR: the shell's file names
			}
			return completeCategories(cfgPath)(cmd, args, toComplete)
		},
		Short: "Add a source (a list file, a folder of lists, or a URL) to a category",
		Long: `Add a source to the category in the config, creating the category when
new; comments and order of the config are kept. A file or folder inside the
config's folder is written relative to it. A URL is downloaded by the
running proxy within a minute, or at once with 'sluice list update'.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := editConfig(*cfgPath)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			cat, arg := args[0], args[1]
			src, text, err := importSource(cfg, arg)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			w := cmd.OutOrStdout()
			for _, s := range cfg.Categories[cat] {
				if s.URL != "" && s.URL == src.URL || s.Path != "" && s.Path == src.Path {
					fmt.Fprintf(w, "%s: %s is already a source\n", cat, src)
					return nil
				}
			}
			if err := rules.AddCategorySource(cfg.File, cat, text); err != nil {
				return &exitError{code: 2, err: err}
			}
			if _, err := rules.LoadConfig(cfg.File); err != nil {
				return &exitError{code: 2, err: fmt.Errorf("source added, but the config no longer loads: %w", err)}
			}
			fmt.Fprintf(w, "%s: added source %s to %s\n", cat, text, cfg.File)
			if src.URL != "" {
				fmt.Fprintf(w, "download it now with: sluice list -c %s update %s\n", cfg.File, cat)
				return nil
			}
			probe := &rules.Config{File: cfg.File, CacheDir: cfg.CacheDir, Categories: map[string][]rules.Source{cat: {src}}}
			if set, err := rules.LoadSet(probe); err == nil {
				printSource(w, probe, set.Categories[cat].Sources[0], time.Now())
			}
			return nil
		},
	}
}

// importSource checks the argument of `list import` and returns the source
// and the text to write in the config.
func importSource(cfg *rules.Config, arg string) (rules.Source, string, error) {
	if strings.Contains(arg, "://") {
		u, err := url.Parse(arg)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return rules.Source{}, "", fmt.Errorf("invalid list URL %q (want http:// or https://)", arg)
		}
		return rules.Source{URL: arg, Refresh: rules.DefaultRefresh}, arg, nil
	}
	abs, err := filepath.Abs(arg)
	if err != nil {
		return rules.Source{}, "", err
	}
	if _, err := os.Stat(abs); err != nil {
		return rules.Source{}, "", err
	}
	text := abs
	if rel, err := filepath.Rel(filepath.Dir(cfg.File), abs); err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		text = filepath.ToSlash(rel)
	}
	return rules.Source{Path: abs}, text, nil
}

func listUpdateCmd(cfgPath *string) *cobra.Command {
	return &cobra.Command{
		Use:               "update [CATEGORY]",
		ValidArgsFunction: completeCategories(cfgPath),
		Short:             "Download the remote sources now (all, or one category's)",
		Long: `Fetch every remote source (or those of one category) now, through the
config's default route, with a conditional GET. A failed download keeps the
last good copy. Exit status 1 when any source failed.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := loadConfig(*cfgPath)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			type job struct {
				cat string
				src rules.Source
			}
			var jobs []job
			seen := map[string]bool{}
			if len(args) == 1 {
				if _, ok := cfg.Categories[args[0]]; !ok {
					return &exitError{code: 2, err: fmt.Errorf("category %q has no sources", args[0])}
				}
			}
			for _, name := range sortedNames(cfg.Categories) {
				if len(args) == 1 && name != args[0] {
					continue
				}
				for _, src := range cfg.Categories[name] {
					if src.URL != "" && !seen[src.URL] {
						seen[src.URL] = true
						jobs = append(jobs, job{name, src})
					}
				}
			}
			w := cmd.OutOrStdout()
			if len(jobs) == 0 {
				fmt.Fprintln(w, "no remote sources")
				return nil
			}
			client, err := server.NewFetchClient(cfg)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt)
			defer stop()
			f := &server.Fetcher{Client: client}
			tty := isTerminal(w)
			failed, changed := 0, 0
			for _, j := range jobs {
				var bar *progressBar
				if tty {
					bar = &progressBar{w: w, label: j.cat}
				} else {
					fmt.Fprintf(w, "%s: fetching %s\n", j.cat, j.src)
				}
				var progress func(int64, int64)
				if bar != nil {
					progress = bar.update
				}
				res, err := f.Fetch(ctx, cfg, j.src, progress)
				if bar != nil {
					bar.clear()
				}
				switch {
				case err != nil:
					failed++
					fmt.Fprintf(w, "%s: %s: %v; %s\n", j.cat, j.src, err, keptCopy(cfg, j.src))
				case res.Changed:
					changed++
					fmt.Fprintf(w, "%s: %s: updated, %s (%s), %s\n", j.cat, j.src, entries(res.Entries), res.Format, byteSize(res.Bytes))
				default:
					fmt.Fprintf(w, "%s: %s: not modified\n", j.cat, j.src)
				}
				if ctx.Err() != nil {
					break
				}
			}
			if changed > 0 {
				fmt.Fprintln(w, "run 'sluice reload -c CONFIG' to apply new lists to a running proxy at once")
			}
			if failed > 0 {
				return &exitError{code: 1, err: fmt.Errorf("%d of %d remote sources failed", failed, len(jobs))}
			}
			return nil
		},
	}
}

// keptCopy describes what a category uses after a failed download.
func keptCopy(cfg *rules.Config, src rules.Source) string {
	if m, err := server.ReadFetchMeta(cfg, src); err == nil && !m.FetchedAt.IsZero() {
		return "keeping the copy of " + timeStamp(m.FetchedAt)
	}
	if _, err := os.Stat(cfg.CachePath(src)); err == nil {
		return "keeping the cached copy"
	}
	return "no copy yet: the category lacks these entries"
}

// progressBar draws a one-line download bar on a terminal.
type progressBar struct {
	w     io.Writer
	label string
	last  time.Time
}

func (b *progressBar) update(read, total int64) {
	now := time.Now()
	if now.Sub(b.last) < 100*time.Millisecond && read != total {
		return
	}
	b.last = now
	if total <= 0 {
		fmt.Fprintf(b.w, "\r\033[K%s: %s", b.label, byteSize(read))
		return
	}
	const width = 30
	done := int(min(read, total) * width / total)
	fmt.Fprintf(b.w, "\r\033[K%s: [%s%s] %s / %s", b.label, strings.Repeat("=", done), strings.Repeat(" ", width-done), byteSize(read), byteSize(total))
}

func (b *progressBar) clear() { fmt.Fprint(b.w, "\r\033[K") }

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func listTestCmd(cfgPath *string) *cobra.Command {
	return &cobra.Command{
		Use:   "test DOMAIN",
		Short: "Show every category and list line that covers a domain",
		Long: `Show every category entry that covers DOMAIN: the domain itself or one of
its parent domains, with the file and line it comes from ("why is this
blocked?"). Exit status 0 when some entry covers it, 1 when none does.
Use 'sluice check' to see which rule decides.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			set, err := loadSet(*cfgPath)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			host, err := rules.NormalizeHost(args[0])
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			w := cmd.OutOrStdout()
			matches := rules.Explain(set, host)
			for _, m := range matches {
				kind := "entry"
				if m.Allow {
					kind = "exception"
				}
				fmt.Fprintf(w, "%s: %s:%d: %s %s\n", m.Category, m.File, m.Line, kind, m.Entry)
			}
			for _, name := range sortedNames(set.Categories) {
				for _, st := range set.Categories[name].Sources {
					if st.Err != nil {
						fmt.Fprintf(cmd.ErrOrStderr(), "note: category %s: source %s not searched: %v\n", name, st.Source, st.Err)
					}
				}
			}
			if len(matches) == 0 {
				fmt.Fprintf(w, "%s: in no category\n", host)
				return &exitError{code: 1}
			}
			return nil
		},
	}
}

func sortedNames[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// entries writes "1 entry", "4,500,000 entries".
func entries(n int) string { return thousands(n) + " " + plural(n, "entry", "entries") }

// thousands writes n with thousands separators: 4,500,000.
func thousands(n int) string {
	s := fmt.Sprint(n)
	if n < 0 {
		return s
	}
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// byteSize writes a byte count for people: 512 B, 1.2 KiB, 3.4 MiB.
func byteSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}

func timeStamp(t time.Time) string { return t.Local().Format("2006-01-02 15:04") }

// period writes a refresh period without zero units: 24h, 30m, 1h30m.
func period(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// agoString writes a duration for people: 45s, 12m, 3h, 2d.
func agoString(now, t time.Time) string {
	d := now.Sub(t)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

// listEdit is what `list add` and `list rm` work on.
type listEdit struct {
	cfg     *rules.Config
	cat     string
	domains []string    // normalized
	files   []localFile // the category's local plain list files
}

// readEdit reads the config at cfgPath for an edit of category args[0]
// with the domains args[1:]. With mustExist, a category without sources
// is an error.
func readEdit(cfgPath string, args []string, mustExist bool) (listEdit, error) {
	cfg, err := editConfig(cfgPath)
	if err != nil {
		return listEdit{}, err
	}
	e := listEdit{cfg: cfg, cat: args[0]}
	if _, ok := cfg.Categories[e.cat]; mustExist && !ok {
		return listEdit{}, fmt.Errorf("category %q has no sources in %s", e.cat, cfg.File)
	}
	if e.domains, err = normalizeArgs(args[1:]); err != nil {
		return listEdit{}, err
	}
	if e.files, err = localFiles(cfg, e.cat); err != nil {
		return listEdit{}, err
	}
	return e, nil
}
