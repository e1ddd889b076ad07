package main

// Temporary: pins the chosen dependencies in go.mod while the packages that
// use them are written. Removed once every dependency has a real importer.
import (
	_ "github.com/elazarl/goproxy"
	_ "github.com/fsnotify/fsnotify"
	_ "github.com/gobwas/glob"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/spf13/cobra"
	_ "go.uber.org/goleak"
	_ "go.yaml.in/yaml/v3"
	_ "golang.org/x/crypto/bcrypt"
	_ "golang.org/x/net/idna"
	_ "golang.org/x/net/proxy"
	_ "golang.org/x/term"
	_ "golang.org/x/time/rate"
)
