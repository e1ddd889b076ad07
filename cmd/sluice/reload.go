package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/spf13/cobra"
)

func reloadCmd() *cobra.Command {
	var pid int
	cmd := &cobra.Command{
		Use:   "reload [--pid PID]",
		Short: "Make the running 'sluice serve' reload its rules now (sends SIGHUP)",
		Long: `Send SIGHUP to the running 'sluice serve' processes of this machine (or to
--pid). They reload the config, users and every list; a broken change is
logged and the running rules stay. Changes to local files are also picked up
on their own within a second.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			pids := []int{pid}
			if pid == 0 {
				pids = findServers()
			}
			if len(pids) == 0 {
				return &exitError{code: 1, err: errNoServer}
			}
			for _, p := range pids {
				if err := syscall.Kill(p, syscall.SIGHUP); err != nil {
					return &exitError{code: 1, err: fmt.Errorf("signal %d: %w", p, err)}
				}
				fmt.Fprintf(cmd.OutOrStdout(), "reload requested from sluice serve (pid %d)\n", p)
			}
			return nil
		},
	}
	cmd.Flags().IntVar(&pid, "pid", 0, "process id of the server (default: every 'sluice serve' of this machine)")
	return cmd
}

// findServers lists the pids of running 'sluice serve' processes.
func findServers() []int {
	self := os.Getpid()
	var pids []int
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		p, err := strconv.Atoi(filepath.Base(d))
		if err != nil || p == self {
			continue
		}
		b, err := os.ReadFile(filepath.Join(d, "cmdline"))
		if err != nil {
			continue
		}
		args := bytes.Split(bytes.TrimRight(b, "\x00"), []byte{0})
		if len(args) >= 2 && filepath.Base(string(args[0])) == "sluice" && string(args[1]) == "serve" {
			pids = append(pids, p)
		}
	}
	return pids
}
