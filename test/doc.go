// Package test holds Sluice's integration tests: they build the real binary,
// run it on loopback and drive it with real clients (curl, nc, Go's net/http,
// golang.org/x/net/proxy) and real upstream proxies (squid, dante).
package test
