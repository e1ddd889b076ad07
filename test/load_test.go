//go:build bench

package test

// Start-up and reloads on large lists for `make bench`: it runs the real
// binary on loopback with 2,000,000 synthetic category domains and prints
// the figures quoted in the README. It is not part of `make test`. The
// throughput figures come from the load harness, test/loadgen.

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice/filter/filtertest"
)

// writeSynthetic writes a config with the synthetic categories as list
// files, one block rule per category, and returns the config text.
func writeSynthetic(t *testing.T, dir string, o filtertest.Options) string {
	set := filtertest.Set(o)
	var cfg strings.Builder
	cfg.WriteString("hosts: {allowed.test: 127.0.0.1}\ncategories:\n")
	names := make([]string, 0, len(set.Categories))
	for name := range set.Categories {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		f, err := os.Create(filepath.Join(dir, name+".txt"))
		if err != nil {
			t.Fatal(err)
		}
		w := bufio.NewWriter(f)
		for _, d := range set.Categories[name].Block {
			w.WriteString(d)
			w.WriteByte('\n')
		}
		w.Flush()
		f.Close()
		fmt.Fprintf(&cfg, "  %s: [%s.txt]\n", name, name)
	}
	cfg.WriteString("rules:\n")
	for _, name := range names {
		fmt.Fprintf(&cfg, "  - block: [\"category:%s\"]\n", name)
	}
	return cfg.String()
}

func rssKiB(pid int) (cur, peak int64) {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "VmRSS:":
			fmt.Sscan(f[1], &cur)
		case "VmHWM:":
			fmt.Sscan(f[1], &peak)
		}
	}
	return
}

func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	return d[int(float64(len(d)-1)*p)]
}

// TestLoad measures start-up with 2,000,000 category domains and memory
// across 50 reloads under load.
func TestLoad(t *testing.T) {
	dir := t.TempDir()
	cfg := writeSynthetic(t, dir, filtertest.Options{Seed: 1, Domains: 2_000_000, Categories: 50})
	os.WriteFile(filepath.Join(dir, "sluice.yaml"), []byte("listen: [\"127.0.0.1:0\"]\n"+cfg), 0o644)

	start := time.Now()
	p := runSluice(t, dir, "serve", "--config", filepath.Join(dir, "sluice.yaml"))
	startup := time.Since(start)
	rss0, _ := rssKiB(p.cmd.Process.Pid)
	t.Logf("start-up with 2,000,000 domains in 50 categories: %v, RSS %d MiB", startup.Round(time.Millisecond), rss0>>10)

	o := newOrigin(t, false)
	pu, _ := url.Parse("http://" + p.addr)
	get := func(cl *http.Client, u string) error {
		resp, err := cl.Get(u)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	}

	// 50 reloads while requests flow; RSS must not climb reload after reload.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tr := &http.Transport{Proxy: http.ProxyURL(pu)}
		defer tr.CloseIdleConnections()
		cl := &http.Client{Transport: tr, Timeout: 10 * time.Second}
		for i := 0; i < 100000; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := get(cl, "http://allowed.test:"+o.port+"/"); err != nil {
				t.Errorf("request during reloads: %v", err)
				return
			}
		}
	})
	var rss []int64
	for i := 0; i < 50; i++ {
		before := strings.Count(p.Log(), "rules reloaded")
		p.cmd.Process.Signal(syscall.SIGHUP)
		deadline := time.Now().Add(60 * time.Second)
		for strings.Count(p.Log(), "rules reloaded") == before && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if n := i + 1; n == 1 || n == 10 || n == 25 || n == 50 {
			// The server hands the compile's memory back in the background
			// after each reload: let it finish before reading the size.
			time.Sleep(2 * time.Second)
		}
		cur, _ := rssKiB(p.cmd.Process.Pid)
		rss = append(rss, cur)
	}
	close(stop)
	wg.Wait()
	_, peak := rssKiB(p.cmd.Process.Pid)
	t.Logf("RSS over 50 reloads (MiB): after 1: %d, after 10: %d, after 25: %d, after 50: %d; peak %d",
		rss[0]>>10, rss[9]>>10, rss[24]>>10, rss[49]>>10, peak>>10)
	if rss[49] > rss[9]*3/2 {
		t.Errorf("RSS grew from %d MiB after 10 reloads to %d MiB after 50", rss[9]>>10, rss[49]>>10)
	}
}

// TestLoadUT1 starts the binary on the real UT1 snapshot kept beside the
// repository (../../shared/data/ut1), when it is there: an optional,
// realistic input for `make bench`; no test depends on it.
func TestLoadUT1(t *testing.T) {
	root, _ := filepath.Abs("../../shared/data/ut1/blacklists")
	if _, err := os.Stat(root); err != nil {
		t.Skipf("no UT1 snapshot at %s: optional input", root)
	}
	dir := t.TempDir()
	cfg := "listen: [\"127.0.0.1:0\"]\ncategory_dirs:\n  - path: " + root + "\nrules:\n  - block: [\"category:gambling\", \"category:social_networks\"]\n"
	os.WriteFile(filepath.Join(dir, "sluice.yaml"), []byte(cfg), 0o644)
	start := time.Now()
	p := runSluice(t, dir, "serve", "--config", filepath.Join(dir, "sluice.yaml"))
	startup := time.Since(start)
	rss, _ := rssKiB(p.cmd.Process.Pid)
	out, _ := runCLI(t, dir, "config", "validate", "--config", filepath.Join(dir, "sluice.yaml"))
	t.Logf("UT1 snapshot: start-up %v, RSS %d MiB; %s", startup.Round(time.Millisecond), rss>>10, strings.TrimSpace(out))
}
