//go:build !unix

package server

import "log/slog"

// raiseFDLimit does nothing where there is no RLIMIT_NOFILE.
func raiseFDLimit(*slog.Logger) {}
