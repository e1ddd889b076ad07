package main

import (
	"fmt"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/sluiceproxy/sluice/proxy/server"
)

func reloadCmd() *cobra.Command {
	var (
		pid     int
		cfgPath string
	)
	cmd := &cobra.Command{
		Use:   "reload (-c FILE | --pid PID)",
		Short: "Make the running 'sluice serve' reload its rules now (sends SIGHUP)",
		Long: `Send SIGHUP to the 'sluice serve' of the config FILE, found through the
config's pid_file (default NAME.pid beside NAME.yaml), or to the process
PID. Before signalling, it checks in /proc that the process is a
'sluice serve' (of FILE, when -c is given) and refuses otherwise: a stale
pid file or another program is never signalled. The server reloads the
config, users and every list; a broken change is logged and the running
rules stay. Changes to local files are also picked up on their own within
a second. Exit status 1 when no such server runs (nothing signalled), 2 on
a wrong command line or when the signal cannot be sent.`,
		Example: `  sluice reload -c /etc/sluice/sluice.yaml
  sluice reload --pid "$(cat /run/sluice/sluice.pid)"`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			switch {
			case pid != 0:
				err = server.CheckServer(pid, cfgPath)
			case cfgPath != "":
				pid, err = server.FindServer(cfgPath)
			default:
				return usagef(cmd, "name the server: -c FILE (its config, whose pid_file is read) or --pid PID")
			}
			if err != nil {
				return negative(err)
			}
			if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
				return failed(fmt.Errorf("cannot signal process %d: %w", pid, err))
			}
			fmt.Fprintf(cmd.OutOrStdout(), "reload requested from sluice serve (pid %d)\n", pid)
			return nil
		},
	}
	cmd.Flags().IntVar(&pid, "pid", 0, "process id of the server (checked to be a sluice serve)")
	cmd.Flags().StringVarP(&cfgPath, "config", "c", "", "config file of the server; its pid_file names the process")
	return cmd
}
