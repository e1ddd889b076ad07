package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/sluiceproxy/sluice/proxy/auth"
	"github.com/sluiceproxy/sluice/proxy/server"
	"github.com/sluiceproxy/sluice/rules"
)

func configCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config COMMAND",
		Short: "Validate or print configuration",
		Long: `Validate a config with every list it names ('config validate'), or print
the embedded default config, a commented starting point ('config default').`,
		Example: `  sluice config validate -c /etc/sluice/sluice.yaml
  sluice config default > sluice.yaml`,
		Args: groupArgs,
		RunE: groupRun,
	}
	var cfgPath string
	validate := &cobra.Command{
		Use:   "validate [--config FILE]",
		Short: "Load and compile the config and every list; report errors with file and line",
		Long: `Load and compile the config and every list, as serve does before it
listens. Exit status: 0 when serve would start (warnings, such as invalid
list lines or an optional source that is missing, are printed); 1 when the
config is valid but a list source that a rule uses is unusable (missing,
unreadable, empty, not a list, or a remote list never downloaded): serve
refuses to start on it, and a running server keeps that list's last good
entries; 2 when the config itself is invalid (serve refuses to start, a
reload keeps the running rules).`,
		Example: `  sluice config validate -c /etc/sluice/sluice.yaml`,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// The same steps as serve: rules, lists, engine, routes, users.
			set, err := server.Validate(server.Options{Config: cfgPath})
			if err != nil {
				return failed(err)
			}
			w := cmd.OutOrStdout()
			// A source that rules need and that is unusable is an error (exit
			// 1); one never downloaded is a warning, since serve fetches it
			// before starting (and refuses to start without it).
			var unusable []error
			said := map[string]bool{} // category and source already reported
			for _, e := range set.SourceErrors() {
				var se *rules.SourceError
				var pe *rules.ParseError
				if errors.As(e, &se) {
					said[se.Category+"\x00"+se.Source.String()] = true
				}
				if errors.Is(e, rules.ErrNotDownloaded) && se != nil && errors.As(e, &pe) {
					fmt.Fprintf(w, "warning: %s:%d: category %s: %s; serve downloads it before it starts, and refuses to start without it\n",
						pe.File, pe.Line, se.Category, describe(se.Err))
					continue
				}
				unusable = append(unusable, e)
			}
			entries := 0
			for _, name := range sortedNames(set.Categories) {
				c := set.Categories[name]
				block, allow := c.Unique()
				entries += len(block) + len(allow)
				for _, src := range c.Sources {
					if err := src.Problem(); err != nil && !said[c.Name+"\x00"+src.Source.String()] {
						fmt.Fprintf(w, "warning: category %s: %s\n", c.Name, sourceProblem(src.Source, err))
					}
					for _, e := range src.Errors {
						fmt.Fprintf(w, "warning: category %s: %s\n", c.Name, describe(e))
					}
				}
			}
			if users := set.Config.Users; users != "" {
				// serve logs these at every load; the users of other lines work.
				_, warnings, err := auth.ReadUsers(users)
				if err != nil {
					return failed(err)
				}
				for _, e := range warnings {
					fmt.Fprintf(w, "warning: users: %s\n", describe(e))
				}
			}
			for _, e := range unusable {
				fmt.Fprintf(w, "error: %s\n", describe(e))
			}
			name := cfgPath
			if name == "" {
				name = "embedded default config"
			}
			if len(unusable) > 0 {
				return &exitError{code: 1, err: fmt.Errorf("%s: %d unusable %s that rules depend on: serve would refuse to start",
					name, len(unusable), plural(len(unusable), "source", "sources"))}
			}
			fmt.Fprintf(w, "%s: ok: %d rules, %d categories, %d category entries\n", name, len(set.Config.Rules), len(set.Categories), entries)
			return nil
		},
	}
	validate.Flags().StringVarP(&cfgPath, "config", "c", "", "config file (default: the embedded default config)")
	def := &cobra.Command{
		Use:   "default",
		Short: "Print the embedded default config",
		Long: `Print the embedded default config: what 'sluice serve' runs without
--config (127.0.0.1:3128, allow everything), with every key commented.`,
		Example: `  sluice config default > /etc/sluice/sluice.yaml`,
		Args:    noArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			cmd.OutOrStdout().Write(rules.DefaultYAML)
		},
	}
	cmd.AddCommand(validate, def)
	return cmd
}

// sourceProblem says what is wrong with src, naming it once.
func sourceProblem(src rules.Source, err error) string {
	msg := describe(err)
	if strings.Contains(msg, src.String()) {
		return msg
	}
	return "source " + src.String() + ": " + msg
}
