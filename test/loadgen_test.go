package test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// loadgenReport is the part of the load harness's JSON (-json) the tests
// read.
type loadgenReport struct {
	Targets []string `json:"targets"`
	Rate    map[string]struct {
		DirectErrors int64 `json:"direct_errors"`
		Targets      map[string]struct {
			Ratio     []float64 `json:"ratio"`
			CPUPer10k []float64 `json:"cpu_per_10k"`
			Conns     []float64 `json:"origin_conns"`
			Ops       int64     `json:"ops"`
			Errors    int64     `json:"errors"`
			Mismatch  int64     `json:"mismatch"`
		} `json:"targets"`
	} `json:"rate"`
	Bulk struct {
		DirectErrors int `json:"direct_errors"`
		Targets      map[string]struct {
			UpRatio   []float64 `json:"up_ratio"`
			DownRatio []float64 `json:"down_ratio"`
			CPUPerGiB []float64 `json:"cpu_per_gib"`
			Bytes     int64     `json:"bytes"`
			Errors    int       `json:"errors"`
			Mismatch  int64     `json:"mismatch"`
		} `json:"targets"`
	} `json:"bulk"`
	Idle map[string]map[string]struct {
		Wanted int     `json:"wanted"`
		Held   int     `json:"held"`
		FDs    float64 `json:"fds"`
		FD1    int     `json:"fd1"`
	} `json:"idle"`
	Rules struct {
		Ratio  []float64 `json:"ratio"`
		Errors int64     `json:"errors"`
	} `json:"rules"`
	Mismatches int64 `json:"mismatches"`
}

// runLoadgen builds the load harness and runs it with args plus -json;
// it returns the report, the harness's output and its exit code.
func runLoadgen(t *testing.T, args ...string) (loadgenReport, string, int) {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "loadgen")
	if out, err := exec.Command("go", "build", "-o", bin, "./loadgen").CombinedOutput(); err != nil {
		t.Fatalf("building the load harness: %v\n%s", err, out)
	}
	js := filepath.Join(dir, "report.json")
	args = append(args, "-timewait-wait", "0") // no wait on the state of the machine: a test asserts no speed
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append(args, "-json", js)...)
	out, err := cmd.CombinedOutput()
	code := 0
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("loadgen: %v\n%s", err, out)
		}
		code = ee.ExitCode()
	}
	var rep loadgenReport
	b, err := os.ReadFile(js)
	if err != nil {
		t.Fatalf("loadgen wrote no report (exit %d): %v\n%s", code, err, out)
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("loadgen's report: %v\n%s", err, b)
	}
	return rep, string(out), code
}

// TestLoadgen runs the load harness of `make bench` briefly against the
// real binary, with tiny sizes, so that the harness cannot rot: every row
// of its table is there, every operation succeeded, and every byte arrived
// as the origin sent it. It asserts no speed.
func TestLoadgen(t *testing.T) {
	const ops, bulkMiB, idle = 200, 4, 50
	rep, out, code := runLoadgen(t, "-proxies", "sluice", "-sluice", sluiceBin, "-rounds", "1",
		"-count", "200", "-duration", "60s", "-bulk", "4", "-idle", "50", "-idle-settle", "100ms",
		"-domains", "2000", "-globs", "20")
	if code != 0 {
		t.Fatalf("loadgen exited %d:\n%s", code, out)
	}
	for _, row := range []string{
		"new tunnel + 1 KiB GET + close, 32 workers (HTTP CONNECT)", "the same through SOCKS5",
		"keep-alive absolute-URI GET of 1 KiB, 32 workers", "one tunnel, 4 MiB up / down",
		"proxy CPU per 10,000 tunnels", "proxy CPU per GiB", "idle tunnels (50 opened): memory and fds each",
		"row 1 with 2,000 domains + 20 globs loaded / with none",
	} {
		if !strings.Contains(out, "| "+row) {
			t.Errorf("no row %q in the table:\n%s", row, out)
		}
	}
	if len(rep.Targets) != 1 || rep.Targets[0] != "Sluice" {
		t.Fatalf("targets %q, want [Sluice]", rep.Targets)
	}
	for _, l := range []string{"connect", "socks", "keepalive"} {
		r := rep.Rate[l]
		f := r.Targets["Sluice"]
		if f.Ops != ops || f.Errors != 0 || f.Mismatch != 0 || r.DirectErrors != 0 {
			t.Errorf("%s: %d operations, %d errors, %d mismatches (direct: %d errors); want %d, 0, 0", l, f.Ops, f.Errors, f.Mismatch, r.DirectErrors, ops)
		}
		if len(f.Ratio) != 1 || f.Ratio[0] <= 0 || len(f.CPUPer10k) != 1 || len(f.Conns) != 1 {
			t.Errorf("%s: ratios %v, CPU %v, origin connections %v: want one of each", l, f.Ratio, f.CPUPer10k, f.Conns)
		}
	}
	// Every tunnel is one connection at the origin: the origin counts right.
	for _, l := range []string{"connect", "socks"} {
		if c := rep.Rate[l].Targets["Sluice"].Conns; len(c) != 1 || c[0] != 1 {
			t.Errorf("%s: %v origin connections per tunnel, want 1", l, c)
		}
	}
	b := rep.Bulk.Targets["Sluice"]
	// Two transfers each way through the proxy (A B B A with direct).
	if b.Bytes != 4*bulkMiB<<20 || b.Errors != 0 || b.Mismatch != 0 || rep.Bulk.DirectErrors != 0 {
		t.Errorf("bulk: %d bytes exact, %d errors, %d mismatches; want %d, 0, 0", b.Bytes, b.Errors, b.Mismatch, 4*bulkMiB<<20)
	}
	if len(b.UpRatio) != 1 || len(b.DownRatio) != 1 || len(b.CPUPerGiB) != 1 {
		t.Errorf("bulk: ratios up %v down %v, CPU %v: want one of each", b.UpRatio, b.DownRatio, b.CPUPerGiB)
	}
	for _, v := range []string{"HTTP CONNECT", "SOCKS5"} {
		i, ok := rep.Idle[v]["Sluice"]
		if !ok || i.Wanted != idle || i.Held != idle || i.FDs <= 0 {
			t.Errorf("idle %s: %+v; want all %d held, and fds counted", v, i, idle)
		}
	}
	if len(rep.Rules.Ratio) != 1 || rep.Rules.Ratio[0] <= 0 || rep.Rules.Errors != 0 {
		t.Errorf("rules: ratios %v, %d errors", rep.Rules.Ratio, rep.Rules.Errors)
	}
	if rep.Mismatches != 0 {
		t.Errorf("%d mismatches", rep.Mismatches)
	}
}

// TestLoadgenCatchesCorruption points the harness at a CONNECT proxy that
// flips one byte of everything it carries towards the client: the harness
// must say so and exit 1, so that its "bytes exact" means something.
func TestLoadgenCatchesCorruption(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var tunnels atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go corruptingTunnel(c, &tunnels)
		}
	}()
	rep, out, code := runLoadgen(t, "-proxies", "external", "-http", ln.Addr().String(), "-loads", "connect,bulk",
		"-rounds", "1", "-count", "50", "-duration", "60s", "-bulk", "1")
	if code != 1 || !strings.Contains(out, "got bytes the origin did not send") {
		t.Errorf("exit %d, want 1 with a word on the bytes:\n%s", code, out)
	}
	if tunnels.Load() == 0 {
		t.Fatal("the corrupting proxy carried no tunnel")
	}
	if f := rep.Rate["connect"].Targets["proxy"]; f.Mismatch == 0 || f.Ops != 0 {
		t.Errorf("connect: %d mismatches, %d operations passed; want every operation caught", f.Mismatch, f.Ops)
	}
	if f := rep.Bulk.Targets["proxy"]; f.Mismatch != 2 || f.Bytes != 2<<20 {
		t.Errorf("bulk: %d mismatches, %d bytes exact; want both downloads caught and both uploads exact", f.Mismatch, f.Bytes)
	}
}

// corruptingTunnel serves one CONNECT and relays both ways, flipping the
// 200th byte towards the client (in the body of a 1 KiB response).
func corruptingTunnel(c net.Conn, tunnels *atomic.Int64) {
	defer c.Close()
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	if err != nil || req.Method != http.MethodConnect {
		return
	}
	up, err := net.Dial("tcp", req.Host)
	if err != nil {
		io.WriteString(c, "HTTP/1.1 502 Bad Gateway\r\n\r\n")
		return
	}
	defer up.Close()
	tunnels.Add(1)
	io.WriteString(c, "HTTP/1.1 200 OK\r\n\r\n")
	go func() {
		io.Copy(up, br)
		up.(*net.TCPConn).CloseWrite()
	}()
	buf := make([]byte, 32<<10)
	seen := 0
	for {
		n, err := up.Read(buf)
		if seen < 200 && seen+n >= 200 {
			buf[199-seen] ^= 0x20
		}
		seen += n
		if _, werr := c.Write(buf[:n]); werr != nil || err != nil {
			return
		}
	}
}

// TestLoadgenProfile: with -profile, the harness fetches a CPU profile of
// Sluice from its admin listener while a load runs.
func TestLoadgenProfile(t *testing.T) {
	dir := t.TempDir()
	_, out, code := runLoadgen(t, "-proxies", "sluice", "-sluice", sluiceBin, "-loads", "connect",
		"-rounds", "1", "-count", "100", "-duration", "2s", "-profile", dir)
	if code != 0 {
		t.Fatalf("loadgen exited %d:\n%s", code, out)
	}
	b, err := os.ReadFile(filepath.Join(dir, "connect.pprof"))
	if err != nil {
		t.Fatalf("no profile: %v\n%s", err, out)
	}
	if len(b) < 100 || b[0] != 0x1f || b[1] != 0x8b { // pprof's profiles are gzipped protobuf
		t.Errorf("connect.pprof is not a profile: %d bytes starting %x", len(b), b[:min(len(b), 4)])
	}
}

// TestLoadgenReferences runs the harness briefly against its references:
// the floor proxy (peers/floor.c, compiled by the harness with cc; auto,
// read/write and splice modes), the same program as a TCP port
// forwarder, and HAProxy as one. Every operation must pass with its bytes
// exact through each, the forwarders must reach the origin once per
// tunnel, and an idle tunnel must hold 2 fds, also in splice mode (the
// floor gives a pipe back while its tunnel waits). It asserts no speed.
func TestLoadgenReferences(t *testing.T) {
	const ops, bulkMiB, idle = 200, 4, 50
	rep, out, code := runLoadgen(t, "-proxies", "floor,floor-rw,floor-splice,forward,haproxy",
		"-loads", "connect,socks,keepalive,bulk,idle", "-rounds", "1",
		"-count", "200", "-duration", "60s", "-bulk", "4", "-idle", "50", "-idle-settle", "100ms")
	if code != 0 {
		t.Fatalf("loadgen exited %d:\n%s", code, out)
	}
	names := []string{"floor", "floor rw", "floor splice", "TCP forward", "HAProxy"}
	if strings.Join(rep.Targets, ",") != strings.Join(names, ",") {
		t.Fatalf("targets %q, want %q", rep.Targets, names)
	}
	if !strings.Contains(out, "(TCP forward)") {
		t.Errorf("the table does not mark the forwarders' figures:\n%s", out)
	}
	for _, n := range names {
		forward := n == "TCP forward" || n == "HAProxy"
		loads := []string{"connect", "socks", "keepalive"}
		if forward {
			loads = []string{"connect", "keepalive"} // no SOCKS5 row: no handshake at all
			if _, ok := rep.Rate["socks"].Targets[n]; ok {
				t.Errorf("%s: a SOCKS5 figure for a forwarder", n)
			}
		}
		for _, l := range loads {
			f, ok := rep.Rate[l].Targets[n]
			if !ok || f.Ops != ops || f.Errors != 0 || f.Mismatch != 0 {
				t.Errorf("%s, %s: %d operations, %d errors, %d mismatches; want %d, 0, 0", n, l, f.Ops, f.Errors, f.Mismatch, ops)
			}
			if len(f.CPUPer10k) != 1 {
				t.Errorf("%s, %s: CPU %v, want one figure", n, l, f.CPUPer10k)
			}
		}
		if c := rep.Rate["connect"].Targets[n].Conns; len(c) != 1 || c[0] != 1 {
			t.Errorf("%s: %v origin connections per tunnel, want 1", n, c)
		}
		b := rep.Bulk.Targets[n]
		if b.Bytes != 4*bulkMiB<<20 || b.Errors != 0 || b.Mismatch != 0 {
			t.Errorf("%s, bulk: %d bytes exact, %d errors, %d mismatches; want %d, 0, 0", n, b.Bytes, b.Errors, b.Mismatch, 4*bulkMiB<<20)
		}
		vias := []string{"HTTP CONNECT", "SOCKS5"}
		if forward {
			vias = []string{"TCP forward"}
		}
		for _, v := range vias {
			i, ok := rep.Idle[v][n]
			// 2 fds each, give or take the few fds a proxy holds for
			// all tunnels: the empty pipes of the floor's threads, one
			// HAProxy may close meanwhile (a floor tunnel holding its
			// pipes: 6).
			if !ok || i.Wanted != idle || i.Held != idle || i.FDs < 1.8 || i.FDs > 2.5 {
				t.Errorf("%s, idle %s: %+v; want all %d held, 2 fds each", n, v, i, idle)
			}
		}
	}
	if rep.Mismatches != 0 {
		t.Errorf("%d mismatches", rep.Mismatches)
	}
}
