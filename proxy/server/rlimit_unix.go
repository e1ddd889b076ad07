//go:build unix

package server

import (
	"log/slog"
	"syscall"
)

// raiseFDLimit raises the soft limit of open files to the hard limit: every
// client connection and every tunnel's origin takes one.
func raiseFDLimit(log *slog.Logger) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		log.Warn("cannot read the open files limit", "err", err)
		return
	}
	if lim.Cur < lim.Max {
		want := lim
		want.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err != nil {
			log.Warn("cannot raise the open files limit", "soft", lim.Cur, "hard", lim.Max, "err", err)
			return
		}
		lim = want
	}
	log.Info("open files limit", "nofile", lim.Cur)
}
