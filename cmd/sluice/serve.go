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
SOCKS4a on the same port. SIGHUP, 'sluice reload' or any change to the config,
users or list files reloads the rules without a restart; a broken change keeps
the running rules. SIGINT or SIGTERM stop it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			level := slog.LevelInfo
			if debug {
				level = slog.LevelDebug
			}
			log := newLogger(level)
			opts.Logger = log
			srv, err := server.New(opts)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			go func() {
				for {
					select {
					case <-ctx.Done():
						return
					case <-hup:
						log.Info("SIGHUP: reloading")
						_ = srv.Reload()
					}
				}
			}()
			if opts.Config != "" {
				go func() {
					if err := srv.Watch(ctx); err != nil {
						log.Warn("file watching disabled; use SIGHUP or 'sluice reload'", "err", err)
					}
				}()
			}
			if err := srv.Run(ctx); err != nil {
				return &exitError{code: 1, err: err}
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
