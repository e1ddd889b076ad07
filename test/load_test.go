//go:build bench

package test

// The load harness behind `make bench`: it runs the real binary on loopback
// with large synthetic lists and drives it with bounded loops, then prints
// the figures quoted in the README. It is not part of `make test`.

import (
	"bufio"
	"fmt"
	"io"
	"net"
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

// TestLoad measures start-up with 2,000,000 category domains, request
// throughput and latency for plain HTTP and CONNECT, and memory across 50
// reloads under load.
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
	const workers, perWorker = 16, 1000 // bounded: 16,000 requests per phase
	phase := func(name string, do func(cl *http.Client, i int) error) {
		tr := &http.Transport{Proxy: http.ProxyURL(pu), MaxIdleConnsPerHost: workers, DisableKeepAlives: name == "connect"}
		defer tr.CloseIdleConnections()
		cl := &http.Client{Transport: tr, Timeout: 10 * time.Second}
		var mu sync.Mutex
		var lat []time.Duration
		var errs int
		deadline := time.Now().Add(60 * time.Second)
		t0 := time.Now()
		var wg sync.WaitGroup
		for w := 0; w < workers; w++ {
			wg.Go(func() {
				var mine []time.Duration
				bad := 0
				for i := 0; i < perWorker && time.Now().Before(deadline); i++ {
					s := time.Now()
					if err := do(cl, i); err != nil {
						bad++
						continue
					}
					mine = append(mine, time.Since(s))
				}
				mu.Lock()
				lat = append(lat, mine...)
				errs += bad
				mu.Unlock()
			})
		}
		wg.Wait()
		el := time.Since(t0)
		t.Logf("%-8s %6d requests in %v: %.0f req/s, p50 %v, p99 %v, errors %d",
			name, len(lat), el.Round(time.Millisecond), float64(len(lat))/el.Seconds(),
			percentile(lat, 0.5).Round(time.Microsecond), percentile(lat, 0.99).Round(time.Microsecond), errs)
		if errs > 0 {
			t.Errorf("%s: %d errors", name, errs)
		}
	}
	get := func(u string) func(cl *http.Client, i int) error {
		return func(cl *http.Client, i int) error {
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
	}
	phase("plain", get("http://allowed.test:"+o.port+"/"))
	// CONNECT tunnels to a TCP echo origin, one new tunnel per request, so
	// the figure is the proxy's cost and not TLS handshakes in this process.
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	_, echoPort, _ := net.SplitHostPort(echo.Addr().String())
	phase("connect", func(_ *http.Client, i int) error {
		c, err := net.Dial("tcp", p.addr)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(c, "CONNECT allowed.test:%s HTTP/1.1\r\nHost: allowed.test:%s\r\n\r\nping", echoPort, echoPort)
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return err
		}
		if resp.StatusCode != 200 {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		buf := make([]byte, 4)
		if _, err := io.ReadFull(br, buf); err != nil || string(buf) != "ping" {
			return fmt.Errorf("echo %q: %v", buf, err)
		}
		return nil
	})

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
			if err := get("http://allowed.test:"+o.port+"/")(cl, i); err != nil {
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
