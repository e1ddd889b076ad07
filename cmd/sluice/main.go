// Command sluice is a forward proxy with content filtering: an HTTP proxy
// (plain and CONNECT), SOCKS5 and SOCKS4a on the same port, that allows or
// blocks every destination by rules and can chain through upstream proxies.
package main

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	root := newRoot()
	os.Exit(report(os.Stderr, root.Execute()))
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:   "sluice",
		Short: "A forward proxy with content filtering",
		Long: `Sluice is a forward proxy with content filtering: an HTTP proxy (plain and
CONNECT), SOCKS5 and SOCKS4a on the same port, that allows or blocks every
destination by rules and category lists, can chain through upstream
proxies, and reloads its rules without a restart.

'sluice serve -c FILE' runs it; 'sluice check' says what the rules decide
for a destination; 'sluice list' and 'sluice users' edit its lists and
users; 'sluice config validate' checks a config. The README is the manual
of every config key.

Exit status, for every command: 0 done; 1 nothing to do or a negative
answer (blocked, not found, nothing removed, a source the command reports
as unusable); 2 an error (a wrong command line, an invalid config, an I/O
failure). Errors are one line on standard error, "sluice: " then what
failed, with the file and line when there is one.`,
		Example: `  sluice serve -c /etc/sluice/sluice.yaml
  sluice check -c /etc/sluice/sluice.yaml www.tiktok.com
  sluice help list`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(flagError)
	root.AddCommand(serveCmd(), checkCmd(), configCmd(), versionCmd(), reloadCmd())
	for _, c := range extraCommands {
		root.AddCommand(c())
	}
	return root
}

// extraCommands lets other files of this package add their commands.
var extraCommands []func() *cobra.Command

func versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "version",
		Short:   "Print the version",
		Long:    "Print the version: the output of git describe when built by make, else \"dev\".",
		Example: `  sluice version`,
		Args:    noArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(cmd.OutOrStdout(), "sluice", version)
		},
	}
}

// newLogger logs JSON when stderr is not a terminal, text when it is. An
// error in a line is rendered as the CLI renders it (see describe): once,
// in the user's terms, without our packages' names.
func newLogger(level slog.Level) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: describeErrors}
	if term.IsTerminal(int(os.Stderr.Fd())) {
		return slog.New(slog.NewTextHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewJSONHandler(os.Stderr, opts))
}

// describeErrors is the loggers' ReplaceAttr: an error value becomes the
// one line describe makes of it.
func describeErrors(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindAny {
		if err, ok := a.Value.Any().(error); ok && err != nil {
			a.Value = slog.StringValue(describe(err))
		}
	}
	return a
}
