package server

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package when a test leaves a goroutine behind: a
// server that returned from Run must have ended every connection, HTTP
// server, reload trigger and accept loop it started.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
