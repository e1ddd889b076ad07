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
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cfgPath)
			if err != nil {
				return failed(err)
			}
			// As a running server reloads: an unusable local source shows
			// its error and the last good copy the server keeps serving.
			set, err := rules.LoadSetWith(cfg, rules.LoadOptions{LastGood: true})
			if err != nil {
				return failed(err)
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
func editConfig(cmd *cobra.Command, cfgPath string) (*rules.Config, error) {
	if cfgPath == "" {
		return nil, usagef(cmd, "--config FILE is needed to change lists")
	}
	cfg, err := rules.LoadConfig(cfgPath)
	if err != nil {
		return nil, failed(err)
	}
	return cfg, nil
}

// unknownCategory is the one message of every list command for a category
// the config does not have.
func unknownCategory(cfg *rules.Config, name string) error {
	known := rules.CategoryNames(cfg)
	if len(known) == 0 {
		return fmt.Errorf("unknown category %q (the config has none)", name)
	}
	return fmt.Errorf("unknown category %q (known: %s)", name, strings.Join(known, ", "))
}

// knownCategory returns unknownCategory's error unless cfg has category name.
func knownCategory(cfg *rules.Config, name string) error {
	if slices.Contains(rules.CategoryNames(cfg), name) {
		return nil
	}
	return unknownCategory(cfg, name)
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
			fmt.Fprintf(w, "      %s\n", describe(err))
		default:
			if m.FetchedAt.IsZero() {
				fmt.Fprintf(w, "      never downloaded; refreshed every %s\n", period(refresh))
			} else {
				fmt.Fprintf(w, "      refreshed %s (%s ago), every %s\n", timeStamp(m.FetchedAt), agoString(now, m.FetchedAt), period(refresh))
			}
			if m.LastError != "" {
				fmt.Fprintf(w, "      last attempt %s failed: %s\n", timeStamp(m.LastAttempt), fetchProblem(src, errors.New(m.LastError)))
			}
		}
	}
	if err := st.Problem(); err != nil && (src.URL == "" || !errors.Is(err, rules.ErrNotDownloaded)) {
		fmt.Fprintf(w, "      ERROR: %s\n", describe(err))
	}
	if st.LastGood != "" {
		fmt.Fprintf(w, "      a running proxy keeps its last good copy: %s (%s)\n", entries(st.Entries), st.LastGood)
	}
	for _, e := range st.Errors {
		fmt.Fprintf(w, "      invalid: %s\n", describe(e))
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
entries that contain TEXT, and exit status 1 when none does. A category
the config does not have is an error (exit status 2).`,
		Example: `  sluice list -c sluice.yaml show social
  sluice list -c sluice.yaml show ads --grep tracker
  sluice list show builtin:doh`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			set, err := loadSet(*cfgPath)
			if err != nil {
				return failed(err)
			}
			cl, ok := set.Categories[args[0]]
			if !ok {
				if cl, ok = rules.LoadBuiltin(args[0]); !ok {
					return failed(unknownCategory(set.Config, args[0]))
				}
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
				return negative(nil)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&grep, "grep", "", "only entries that contain TEXT")
	return cmd
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
as *.domain, in any case. A running proxy picks the change up on its own.
Exit status 1 when every domain was listed already (nothing added).`,
		Example: `  sluice list -c sluice.yaml add social tiktok.com instagram.com
  sluice list -c sluice.yaml add social https://www.youtube.com/watch?v=x`,
		Args: argsBetween(2, -1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, domains, err := readEdit(cmd, *cfgPath, args)
			if err != nil {
				return err
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
				return failed(err)
			}
			for _, d := range domains {
				if slices.Contains(res.Listed, d) {
					fmt.Fprintf(w, "  %s (already listed)\n", d)
				} else {
					fmt.Fprintf(w, "+ %s\n", d)
				}
			}
			fmt.Fprintf(w, "%s: %d added to %s\n", cat, len(res.Added), res.File)
			if len(res.Added) == 0 {
				return negative(nil)
			}
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
remote source, a folder or a file in another format is reported with the
file and line it comes from, and not removed: allow it with an allow rule
before the rule that blocks the category, or for a while with 'sluice
allow DOMAIN --for 1h'. Exit status 1 when nothing was removed.`,
		Example: `  sluice list -c sluice.yaml rm social tiktok.com
  sluice list -c sluice.yaml rm social https://www.instagram.com/`,
		Args: argsBetween(2, -1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, domains, err := readEdit(cmd, *cfgPath, args)
			if err != nil {
				return err
			}
			cat, w := args[0], cmd.OutOrStdout()
			if err := knownCategory(cfg, cat); err != nil {
				return failed(err)
			}
			var res rules.RemoveResult
			if _, local := cfg.Categories[cat]; local {
				if res, err = rules.RemoveFromCategory(cfg, cat, domains); err != nil {
					return failed(err)
				}
			} else {
				// Only in a category_dirs folder: no file of its own to edit.
				if res, err = explainMissing(cfg, cat, domains); err != nil {
					return failed(err)
				}
			}
			for _, r := range res.Removed {
				fmt.Fprintf(w, "- %s (%s)\n", r.Domain, r.File)
			}
			fromElsewhere := ""
			for _, m := range res.Missing {
				if len(m.From) > 0 {
					fmt.Fprintf(w, "  %s: not removed: it comes from %s, which sluice does not edit\n", m.Domain, strings.Join(m.From, ", "))
					fromElsewhere = m.Domain
				} else {
					fmt.Fprintf(w, "  %s: not listed in %s\n", m.Domain, cat)
				}
			}
			fmt.Fprintf(w, "%s: %d removed\n", cat, res.Lines)
			if fromElsewhere != "" {
				fmt.Fprintf(w, "to allow %s anyway: add a rule `- allow: [\".%s\"]` (the domain and its subdomains) before the rule that blocks category:%s in %s, or run 'sluice allow -c %s %s --for 1h'\n",
					fromElsewhere, fromElsewhere, cat, cfg.File, cfg.File, fromElsewhere)
			}
			if res.Lines == 0 {
				return negative(nil)
			}
			return nil
		},
	}
}

// readEdit reads the config at cfgPath for an edit of category args[0]
// with the domains args[1:], as pasted (see rules.ParseEntries). Its
// errors carry their exit status.
func readEdit(cmd *cobra.Command, cfgPath string, args []string) (*rules.Config, []string, error) {
	cfg, err := editConfig(cmd, cfgPath)
	if err != nil {
		return nil, nil, err
	}
	domains, err := rules.ParseEntries(args[1:])
	if err != nil {
		return nil, nil, usagef(cmd, "%s", describe(err))
	}
	return cfg, domains, nil
}

// explainMissing reports, for a category that comes only from a
// category_dirs folder, where each domain is listed: nothing is removed.
func explainMissing(cfg *rules.Config, cat string, domains []string) (rules.RemoveResult, error) {
	var res rules.RemoveResult
	set, err := rules.LoadSet(cfg)
	if err != nil {
		return res, err
	}
	for _, d := range domains {
		m := rules.Removal{Domain: d}
		for _, x := range rules.Explain(set, d) {
			if x.Category == cat && x.Entry == d && !x.Allow {
				m.From = append(m.From, fmt.Sprintf("%s:%d", x.File, x.Line))
			}
		}
		res.Missing = append(res.Missing, m)
	}
	return res, nil
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
running proxy within a minute, or at once with 'sluice list update'.
Exit status 1 when the category has that source already.`,
		Example: `  sluice list -c sluice.yaml import ads lists/hosts.txt
  sluice list -c sluice.yaml import adult /var/lib/ut1/blacklists/adult
  sluice list -c sluice.yaml import ads https://lists.example.org/hosts.txt`,
		Args: exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := editConfig(cmd, *cfgPath)
			if err != nil {
				return err
			}
			cat, w := args[0], cmd.OutOrStdout()
			src, text, added, err := rules.ImportSource(cfg, cat, args[1])
			if err != nil {
				return failed(err)
			}
			if !added {
				fmt.Fprintf(w, "%s: %s is already a source\n", cat, src)
				return negative(nil)
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
last good copy. Exit status 1 when any source failed, or when there is no
remote source to download.`,
		Example: `  sluice list -c sluice.yaml update
  sluice list -c sluice.yaml update ads`,
		Args: argsBetween(0, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := loadConfig(*cfgPath)
			if err != nil {
				return failed(err)
			}
			cat := ""
			if len(args) == 1 {
				cat = args[0]
			}
			if cat != "" {
				if err := knownCategory(cfg, cat); err != nil {
					return failed(err)
				}
			}
			jobs, err := cfg.RemoteSources(cat)
			if err != nil && cat == "" {
				return failed(err)
			}
			w := cmd.OutOrStdout()
			if len(jobs) == 0 {
				if cat != "" {
					fmt.Fprintf(w, "category %s has no remote sources: nothing to download\n", cat)
				} else {
					fmt.Fprintln(w, "no remote sources: nothing to download")
				}
				return negative(nil)
			}
			client, err := server.NewFetchClient(cfg)
			if err != nil {
				return failed(err)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt)
			defer stop()
			f := &server.Fetcher{Client: client}
			tty := isTerminal(w)
			nfailed, changed := 0, 0
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
					nfailed++
					fmt.Fprintf(w, "%s: %s: %s; %s\n", j.Category, j.Source, fetchProblem(j.Source, err), keptCopy(cfg, j.Source))
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
			if nfailed > 0 {
				return negative(fmt.Errorf("%d of %d remote sources failed", nfailed, len(jobs)))
			}
			return nil
		},
	}
}

// fetchProblem says why the download of src failed, without naming src
// again ("fetch URL: ", net/http's "Get \"URL\": ").
func fetchProblem(src rules.Source, err error) string {
	msg := describe(err)
	for _, again := range []string{"fetch " + src.String() + ": ", "fetch: ", "Get \"" + src.String() + "\": "} {
		msg = strings.Replace(msg, again, "", 1)
	}
	return msg
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
		Example: `  sluice list -c sluice.yaml test www.tiktok.com
  sluice list -c sluice.yaml test https://ads.example.com/banner.js`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			set, err := loadSet(*cfgPath)
			if err != nil {
				return failed(err)
			}
			host, err := rules.ParseEntry(args[0])
			if err != nil {
				return usagef(cmd, "%s", describe(err))
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
						why := strings.TrimPrefix(describe(st.Err), st.Source.String()+": ")
						fmt.Fprintf(cmd.ErrOrStderr(), "note: category %s: source %s not searched: %s\n", name, st.Source, why)
					}
				}
			}
			if len(matches) == 0 {
				fmt.Fprintf(w, "%s: in no category\n", host)
				return negative(nil)
			}
			return nil
		},
	}
}
