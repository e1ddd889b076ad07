package test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestAccessLogRotateUnderLoad: logrotate's rename and SIGUSR1, five
// times while eight clients send requests, buffered and not: after the
// stop every request's line is in exactly one of the six files, whole.
func TestAccessLogRotateUnderLoad(t *testing.T) {
	o := newOrigin(t, false)
	for _, flush := range []string{"1s", "off"} {
		t.Run(flush, func(t *testing.T) {
			p := startSluice(t, "default: allow\nhosts: {allowed.test: 127.0.0.1}\naccess_log: access.log\naccess_log_flush: "+flush+"\n", nil)
			path := filepath.Join(p.dir, "access.log")
			proxyURL, _ := url.Parse("http://" + p.addr)
			const clients, each, rotations = 8, 60, 5
			var wg sync.WaitGroup
			errs := make(chan error, clients)
			for c := range clients {
				wg.Go(func() {
					tr := &http.Transport{Proxy: http.ProxyURL(proxyURL)}
					defer tr.CloseIdleConnections()
					cl := &http.Client{Timeout: 20 * time.Second, Transport: tr}
					for i := range each {
						resp, err := cl.Get(fmt.Sprintf("http://allowed.test:%s/c%d/r%d", o.port, c, i))
						if err != nil {
							errs <- err
							return
						}
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
					}
				})
			}
			for r := 1; r <= rotations; r++ {
				time.Sleep(30 * time.Millisecond)
				if err := os.Rename(path, fmt.Sprintf("%s.%d", path, r)); err != nil {
					t.Fatal(err)
				}
				p.cmd.Process.Signal(syscall.SIGUSR1)
				eventually(t, "reopened", func() bool { return strings.Count(p.Log(), "SIGUSR1: access log reopened") >= r })
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			p.stop(t)
			files := []string{path}
			for r := 1; r <= rotations; r++ {
				files = append(files, fmt.Sprintf("%s.%d", path, r))
			}
			loggedOnce(t, files, false, clients, each)
		})
	}
}

// TestAccessLogReloadSwitchUnderLoad: four reloads that move access_log
// to another file while eight clients send requests, buffered and not:
// after the stop every request's line is in exactly one of the five
// files, whole.
func TestAccessLogReloadSwitchUnderLoad(t *testing.T) {
	o := newOrigin(t, false)
	for _, flush := range []string{"1s", "off"} {
		t.Run(flush, func(t *testing.T) {
			conf := func(n int) string {
				return fmt.Sprintf("default: allow\nhosts: {allowed.test: 127.0.0.1}\naccess_log: access%d.log\naccess_log_flush: %s\n", n, flush)
			}
			p := startSluice(t, conf(0), nil)
			proxyURL, _ := url.Parse("http://" + p.addr)
			const clients, each, switches = 8, 60, 4
			var wg sync.WaitGroup
			errs := make(chan error, clients)
			for c := range clients {
				wg.Go(func() {
					tr := &http.Transport{Proxy: http.ProxyURL(proxyURL)}
					defer tr.CloseIdleConnections()
					cl := &http.Client{Timeout: 20 * time.Second, Transport: tr}
					for i := range each {
						resp, err := cl.Get(fmt.Sprintf("http://allowed.test:%s/c%d/r%d", o.port, c, i))
						if err != nil {
							errs <- err
							return
						}
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
					}
				})
			}
			cfg := filepath.Join(p.dir, "sluice.yaml")
			for n := 1; n <= switches; n++ {
				time.Sleep(30 * time.Millisecond)
				tmp := cfg + ".new"
				if err := os.WriteFile(tmp, []byte(conf(n)), 0o644); err != nil {
					t.Fatal(err)
				}
				if err := os.Rename(tmp, cfg); err != nil {
					t.Fatal(err)
				}
				p.cmd.Process.Signal(syscall.SIGHUP)
				eventually(t, "reloaded", func() bool { return strings.Count(p.Log(), "rules reloaded") >= n })
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			stopWithin(t, p, 30*time.Second)
			var files []string
			for n := 0; n <= switches; n++ {
				files = append(files, filepath.Join(p.dir, fmt.Sprintf("access%d.log", n)))
			}
			loggedOnce(t, files, true, clients, each)
		})
	}
}

// loggedOnce reads the JSON access lines of files (a missing one is empty
// when missingOK) and fails unless each file ends in a whole line, every
// line is a whole access line, and each path /cC/rI of clients x each
// requests is logged exactly once across them.
func loggedOnce(t *testing.T, files []string, missingOK bool, clients, each int) {
	t.Helper()
	seen := map[string]int{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil && !(missingOK && os.IsNotExist(err)) {
			t.Fatal(err)
		}
		if len(b) > 0 && b[len(b)-1] != '\n' {
			t.Fatalf("%s ends in half a line", f)
		}
		for _, l := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
			if l == "" {
				continue
			}
			var m struct{ Msg, Path string }
			if err := json.Unmarshal([]byte(l), &m); err != nil || m.Msg != "access" {
				t.Fatalf("%s: not a whole access line (%v): %.200q", f, err, l)
			}
			seen[m.Path]++
		}
	}
	for c := range clients {
		for i := range each {
			if k := fmt.Sprintf("/c%d/r%d", c, i); seen[k] != 1 {
				t.Errorf("%s logged %d times, want once", k, seen[k])
			}
		}
	}
}
