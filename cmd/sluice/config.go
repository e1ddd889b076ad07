package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

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
			set, eng, err := loadEngine(cfgPath)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			w := cmd.OutOrStdout()
			problems := 0
			for _, c := range set.Categories {
				for _, src := range c.Sources {
					if src.Err != nil {
						problems++
						fmt.Fprintf(w, "warning: category %s: %v\n", c.Name, src.Err)
					}
					for _, e := range src.Errors {
						fmt.Fprintf(w, "warning: category %s: %v\n", c.Name, e)
					}
				}
			}
			name := cfgPath
			if name == "" {
				name = "embedded default config"
			}
			n := 0
			for _, c := range eng.Categories() {
				n += c
			}
			fmt.Fprintf(w, "%s: ok: %d rules, %d categories, %d category entries\n", name, eng.Rules(), len(eng.Categories()), n)
			return nil
		},
	}
	validate.Flags().StringVarP(&cfgPath, "config", "c", "", "config file (default: the embedded default config)")
	def := &cobra.Command{
		Use:   "default",
		Short: "Print the embedded default config",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			os.Stdout.Write(rules.DefaultYAML)
		},
	}
	cmd.AddCommand(validate, def)
	return cmd
}
