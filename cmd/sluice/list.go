package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluiceproxy/sluice/proxy/server"
	"github.com/sluiceproxy/sluice/rules"
)

func init() { extraCommands = append(extraCommands, listCmd) }

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
		block, allow := cl.Unique() // a domain two sources list counts once
		fmt.Fprintf(w, "%s: %s", name, entries(len(block)))
		if len(allow) > 0 {
			fmt.Fprintf(w, ", %s %s", thousands(len(allow)), plural(len(allow), "exception", "exceptions"))
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
			block, allow := cl.Unique() // each entry once, however many sources list it
			for _, d := range block {
				if strings.Contains(d, grep) {
					fmt.Fprintln(w, d)
					n++
				}
			}
			for _, d := range allow {
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

func listAddCmd(cfgPath *string) *cobra.Command {
	return &cobra.Command{
		Use:               "add CATEGORY DOMAIN...",
		ValidArgsFunction: completeCategories(cfgPath),
		Short:             "Add domains to a category's local list file (created when new)",
		Long: `Add domains to the first plain list file of the category. When the
category has none (or does not exist yet), lists/CATEGORY.txt is created
beside the config and added to its categories. The file is replaced
atomically; comments, order and existing lines are kept. Each domain also
covers its subdomains. A domain may be pasted as a URL (its host is taken),
as *.domain, in any case. A running proxy picks the change up on its own.`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, domains, err := readEdit(*cfgPath, args)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			cat, w := args[0], cmd.OutOrStdout()
			res, err := rules.AddToCategory(cfg, cat, domains)
			if res.Created {
				fmt.Fprintf(w, "created %s\n", res.File)
			}
			if res.Source != "" {
				fmt.Fprintf(w, "added %s to category %s in %s\n", res.Source, cat, cfg.File)
			}
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			for _, d := range domains {
				if slices.Contains(res.Listed, d) {
					fmt.Fprintf(w, "  %s (already listed)\n", d)
				} else {
					fmt.Fprintf(w, "+ %s\n", d)
				}
			}
			fmt.Fprintf(w, "%s: %d added to %s\n", cat, len(res.Added), res.File)
			return nil
		},
	}
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
			cfg, domains, err := readEdit(*cfgPath, args)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			cat, w := args[0], cmd.OutOrStdout()
			res, err := rules.RemoveFromCategory(cfg, cat, domains)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			for _, r := range res.Removed {
				fmt.Fprintf(w, "- %s (%s)\n", r.Domain, r.File)
			}
			for _, m := range res.Missing {
				if len(m.From) > 0 {
					fmt.Fprintf(w, "  %s: not in a local file; it comes from %s\n", m.Domain, strings.Join(m.From, ", "))
				} else {
					fmt.Fprintf(w, "  %s: not listed in %s\n", m.Domain, cat)
				}
			}
			fmt.Fprintf(w, "%s: %d removed\n", cat, res.Lines)
			return nil
		},
	}
}

// readEdit reads the config at cfgPath for an edit of category args[0]
// with the domains args[1:], as pasted (see rules.ParseEntries).
func readEdit(cfgPath string, args []string) (*rules.Config, []string, error) {
	cfg, err := editConfig(cfgPath)
	if err != nil {
		return nil, nil, err
	}
	domains, err := rules.ParseEntries(args[1:])
	if err != nil {
		return nil, nil, err
	}
	return cfg, domains, nil
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
			cat, w := args[0], cmd.OutOrStdout()
			src, text, added, err := rules.ImportSource(cfg, cat, args[1])
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			if !added {
				fmt.Fprintf(w, "%s: %s is already a source\n", cat, src)
				return nil
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
			cat := ""
			if len(args) == 1 {
				cat = args[0]
			}
			jobs, err := cfg.RemoteSources(cat)
			if err != nil {
				return &exitError{code: 2, err: err}
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
					bar = &progressBar{w: w, label: j.Category}
				} else {
					fmt.Fprintf(w, "%s: fetching %s\n", j.Category, j.Source)
				}
				var progress func(int64, int64)
				if bar != nil {
					progress = bar.update
				}
				res, err := f.Fetch(ctx, cfg, j.Source, progress)
				if bar != nil {
					bar.clear()
				}
				switch {
				case err != nil:
					failed++
					fmt.Fprintf(w, "%s: %s: %v; %s\n", j.Category, j.Source, err, keptCopy(cfg, j.Source))
				case res.Changed:
					changed++
					fmt.Fprintf(w, "%s: %s: updated, %s (%s), %s\n", j.Category, j.Source, entries(res.Entries), res.Format, byteSize(res.Bytes))
				default:
					fmt.Fprintf(w, "%s: %s: not modified\n", j.Category, j.Source)
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

func listTestCmd(cfgPath *string) *cobra.Command {
	return &cobra.Command{
		Use:   "test DOMAIN|URL",
		Short: "Show every category and list line that covers a domain",
		Long: `Show every category entry that covers DOMAIN: the domain itself or one of
its parent domains, with the file and line it comes from ("why is this
blocked?"). DOMAIN may be pasted as a URL or *.domain, in any case. Exit
status 0 when some entry covers it, 1 when none does.
Use 'sluice check' to see which rule decides.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			set, err := loadSet(*cfgPath)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			host, err := rules.ParseEntry(args[0])
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
