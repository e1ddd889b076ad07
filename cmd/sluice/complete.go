package main

import (
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/sluiceproxy/sluice/proxy/auth"
	"github.com/sluiceproxy/sluice/rules"
)

// Shell completion: cobra's `completion` command writes the script for
// bash, zsh, fish or PowerShell; the script asks `sluice __complete ARGS`,
// which calls these. They read the config named by --config (the embedded
// default without it) and never a list file, so they are quick; when
// something cannot be read they offer nothing rather than file names.

// completeCategories offers the config's category names for the first
// argument of a command.
func completeCategories(cfgPath *string) cobra.CompletionFunc {
	return func(_ *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		cfg, err := loadConfig(*cfgPath)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return withPrefix(rules.CategoryNames(cfg), toComplete), cobra.ShellCompDirectiveNoFileComp
	}
}

// completeUsers offers the user names of the htpasswd file (--file, or the
// config's users:) for the first argument of a command.
func completeUsers(cfgPath, file *string) cobra.CompletionFunc {
	return func(_ *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		path, err := usersFile(*cfgPath, *file)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		users, err := auth.ListUsers(path)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return withPrefix(users, toComplete), cobra.ShellCompDirectiveNoFileComp
	}
}

// withPrefix keeps the names that start with prefix.
func withPrefix(names []string, prefix string) []string {
	return slices.DeleteFunc(slices.Clone(names), func(n string) bool { return !strings.HasPrefix(n, prefix) })
}
