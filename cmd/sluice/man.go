package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

func init() { extraCommands = append(extraCommands, manCmd) }

func manCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "man DIR",
		Short: "Write the manual pages, one per command (sluice.1, sluice-serve.1, ...), into DIR",
		Long: `Write a man page for every command into DIR (created when missing), in
section 1: sluice.1, sluice-serve.1, sluice-users-add.1 and so on. The
date in their header is $SOURCE_DATE_EPOCH when set, for reproducible
builds, else today. 'make install' installs them; 'man -l DIR/sluice.1'
reads one in place.`,
		Example: `  sluice man /usr/local/share/man/man1`,
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := args[0]
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return failed(err)
			}
			date := time.Now()
			if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
				sec, err := strconv.ParseInt(s, 10, 64)
				if err != nil {
					return failed(fmt.Errorf("SOURCE_DATE_EPOCH=%q is not a number of seconds", s))
				}
				date = time.Unix(sec, 0).UTC()
			}
			root := cmd.Root()
			root.DisableAutoGenTag = true
			header := &doc.GenManHeader{
				Title:   "SLUICE",
				Section: "1",
				Date:    &date,
				Source:  "Sluice " + version,
				Manual:  "Sluice Manual",
			}
			if err := doc.GenManTree(root, header, dir); err != nil {
				return failed(err)
			}
			pages, _ := filepath.Glob(filepath.Join(dir, "*.1"))
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %d man pages to %s\n", len(pages), dir)
			return nil
		},
	}
}
