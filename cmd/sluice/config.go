package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/sluiceproxy/sluice/proxy/auth"
	"github.com/sluiceproxy/sluice/proxy/server"
	"github.com/sluiceproxy/sluice/rules"
)

func configCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Validate or print configuration",
	}
	var cfgPath string
	validate := &cobra.Command{
		Use:   "validate [--config FILE]",
		Short: "Load and compile the config and every list; report errors with file and line",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// The same steps as serve: rules, lists, engine, routes, users.
			set, err := server.Validate(server.Options{Config: cfgPath})
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			w := cmd.OutOrStdout()
			entries := 0
			for _, c := range set.Categories {
				entries += len(c.Block) + len(c.Allow)
				for _, src := range c.Sources {
					if src.Err != nil {
						fmt.Fprintf(w, "warning: category %s: %v\n", c.Name, src.Err)
					}
					for _, e := range src.Errors {
						fmt.Fprintf(w, "warning: category %s: %v\n", c.Name, e)
					}
				}
			}
			if users := set.Config.Users; users != "" {
				// serve logs these at every load; the users of other lines work.
				_, warnings, err := auth.ReadUsers(users)
				if err != nil {
					return &exitError{code: 2, err: err}
				}
				for _, e := range warnings {
					fmt.Fprintf(w, "warning: users: %v\n", e)
				}
			}
			name := cfgPath
			if name == "" {
				name = "embedded default config"
			}
			fmt.Fprintf(w, "%s: ok: %d rules, %d categories, %d category entries\n", name, len(set.Config.Rules), len(set.Categories), entries)
			return nil
		},
	}
	validate.Flags().StringVarP(&cfgPath, "config", "c", "", "config file (default: the embedded default config)")
	def := &cobra.Command{
		Use:   "default",
		Short: "Print the embedded default config",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			cmd.OutOrStdout().Write(rules.DefaultYAML)
		},
	}
	cmd.AddCommand(validate, def)
	return cmd
}
