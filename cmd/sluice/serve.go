package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/sluiceproxy/sluice/proxy/server"
)

func serveCmd() *cobra.Command {
	var (
		opts  server.Options
		debug bool
	)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the proxy",
		Long: `Run the proxy. With no --config it serves the embedded default config
(127.0.0.1:3128, allow everything). Every listener serves HTTP, SOCKS5 and
SOCKS4a on the same port. SIGHUP, 'sluice reload -c FILE' or any change to the config,
users or list files reloads the rules without a restart; a broken change keeps
the running rules. The process id is written to the config's pid_file.

SIGINT or SIGTERM stop it gracefully: no new connection is accepted,
requests, tunnels and SOCKS connections in flight may finish for up to
shutdown_grace (default 30s), then the rest are closed and it exits 0. A
second SIGINT or SIGTERM during that time kills it at once.

Exit status 2 when it cannot start (an invalid config, a list the rules
need that is unusable, an address it cannot listen on) or fails.`,
		Example: `  sluice serve -c /etc/sluice/sluice.yaml
  sluice serve -l 127.0.0.1:3128 -l '[::1]:3128'
  sluice serve -c sluice.yaml --debug`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			level := slog.LevelInfo
			if debug {
				level = slog.LevelDebug
			}
			log := newLogger(level)
			opts.Logger = log
			opts.Version = version
			srv, err := server.New(opts)
			if err != nil {
				return failed(err)
			}
			// The first SIGINT/SIGTERM starts the graceful shutdown; once it
			// began, a second one kills the process at once.
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			context.AfterFunc(ctx, stop)
			if err := srv.Run(ctx); err != nil {
				return failed(err)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&opts.Config, "config", "c", "", "config file (default: the embedded default config)")
	f.StringArrayVarP(&opts.Listen, "listen", "l", nil, "listen address, repeatable (overrides the config's listen)")
	f.BoolVar(&opts.AllowOpen, "allow-open", false, "allow a non-loopback listener with neither clients nor users set (an open proxy)")
	f.BoolVar(&debug, "debug", false, "log at debug level")
	return cmd
}
