package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
)

func reloadCmd() *cobra.Command {
	var (
		pid     int
		cfgPath string
	)
	cmd := &cobra.Command{
		Use:   "reload [--pid PID | --config FILE]",
		Short: "Make the running 'sluice serve' reload its rules now (sends SIGHUP)",
		Long: `Send SIGHUP to the running 'sluice serve' process given by --pid, or to
those serving --config FILE, or, with neither flag, to every 'sluice serve'
of this machine. They reload the config, users and every list; a broken
change is logged and the running rules stay. Changes to local files are also
picked up on their own within a second.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			pids := []int{pid}
			if pid == 0 {
				pids = findServers(cfgPath)
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
	cmd.Flags().IntVar(&pid, "pid", 0, "process id of the server")
	cmd.Flags().StringVarP(&cfgPath, "config", "c", "", "signal only the servers started with this config file")
	return cmd
}

// findServers lists the pids of running 'sluice serve' processes; with
// config set, only those whose --config names the same file.
func findServers(config string) []int {
	want := ""
	if config != "" {
		if abs, err := filepath.Abs(config); err == nil {
			want = abs
		}
	}
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
		if len(args) < 2 || filepath.Base(string(args[0])) != "sluice" || string(args[1]) != "serve" {
			continue
		}
		if want != "" && !servesConfig(d, args[2:], want) {
			continue
		}
		pids = append(pids, p)
	}
	return pids
}

// servesConfig reports whether the process in procDir was started with
// --config (or -c) naming the file want, resolved against its working folder.
func servesConfig(procDir string, args [][]byte, want string) bool {
	cwd, _ := os.Readlink(filepath.Join(procDir, "cwd"))
	for i, a := range args {
		v, ok := "", false
		switch s := string(a); {
		case (s == "--config" || s == "-c") && i+1 < len(args):
			v, ok = string(args[i+1]), true
		case bytes.HasPrefix(a, []byte("--config=")):
			v, ok = strings.TrimPrefix(s, "--config="), true
		}
		if !ok {
			continue
		}
		if !filepath.IsAbs(v) {
			v = filepath.Join(cwd, v)
		}
		return filepath.Clean(v) == want
	}
	return false
}
