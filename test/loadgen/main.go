// Command loadgen is Sluice's load harness: it starts its own loopback
// origins and drives the proxies under test (Sluice, Squid, microsocks,
// HAProxy as a TCP forwarder, the floor of peers/floor.c, or one already
// running) with bounded loads, each without a proxy and
// through each proxy in turn within the same round (A B B A), and prints
// every figure as a ratio to direct, the median of several rounds, so that
// the noise of a shared machine cancels. It uses the standard library only
// and reaches nothing but 127.0.0.1.
//
// The loads (-loads):
//
//	connect    a new tunnel (HTTP CONNECT) + one 1 KiB GET + close, per worker in a loop
//	socks      the same through SOCKS5
//	keepalive  keep-alive absolute-URI GETs of 1 KiB, one connection per worker
//	bulk       a tunnel carries -bulk MiB up, another -bulk MiB down, checked with crc32c
//	idle       -idle tunnels held open (CONNECT, then SOCKS5 separately): KiB and fds each
//	rules      connect against Sluice with no rules and with -domains + -globs loaded
//
// The proxy's CPU seconds (utime+stime of it and its children, from
// /proc/PID/stat) are read around each connect and bulk phase; -profile
// also fetches CPU profiles of Sluice. Proxies the harness starts run with
// an open files limit of -nofile, soft and hard.
// `make bench` runs it against Sluice, `make bench-peers` against Squid,
// microsocks, HAProxy, the floor and Sluice side by side. The floor is
// the leanest forward proxy (C, epoll on every CPU, no filter, no log):
// what the machine allows a proxy; "forward" is the same program as a
// TCP port forwarder with no handshake at all, and so is HAProxy here. Exit status 1 when a proxy could not
// be started, or any byte arrived that the origin did not send.
package main

import (
	"context"
	"embed"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"
)

//go:embed peers
var peers embed.FS

// options are the command-line flags.
type options struct {
	proxies       []string
	sluiceBin     string
	squidBin      string
	microsocksBin string
	haproxyBin    string
	floorBin      string
	floorFlags    string
	extHTTP       string
	extSOCKS      string
	extPID        int
	loads         []string
	rounds        int
	workers       int
	count         int
	duration      time.Duration
	bulkMiB       int64
	bulkTimeout   time.Duration
	idleN         int
	idleTime      time.Duration
	idleSettle    time.Duration
	domains       int
	globs         int
	nofile        int
	twWait        time.Duration
	jsonOut       string
	markdown      string
	profileDir    string
}

var allLoads = []string{"connect", "socks", "keepalive", "bulk", "idle", "rules"}

var proxyNames = []string{"squid", "microsocks", "haproxy", "floor", "floor-rw", "floor-splice", "forward", "sluice", "external"}

func parseFlags(args []string) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	proxies := fs.String("proxies", "sluice", "proxies to run, in column order: any of "+strings.Join(proxyNames, ", "))
	loads := fs.String("loads", strings.Join(allLoads, ","), "loads to run: "+strings.Join(allLoads, ","))
	fs.StringVar(&o.sluiceBin, "sluice", "bin/sluice", "the Sluice binary")
	fs.StringVar(&o.squidBin, "squid", "squid", "the squid program")
	fs.StringVar(&o.microsocksBin, "microsocks", "microsocks", "the microsocks program")
	fs.StringVar(&o.haproxyBin, "haproxy", "haproxy", "the haproxy program")
	fs.StringVar(&o.floorBin, "floor", "", "the floor program (floor, floor-rw, floor-splice, forward); empty: compile peers/floor*.c with cc -O2")
	fs.StringVar(&o.floorFlags, "floor-flags", "", "more flags for the floor program, e.g. '-p 1048576 -b 4194304' (see peers/floor.c)")
	fs.StringVar(&o.extHTTP, "http", "", "external: the HTTP proxy address (host:port) of a proxy already running")
	fs.StringVar(&o.extSOCKS, "socks", "", "external: its SOCKS5 address")
	fs.IntVar(&o.extPID, "pid", 0, "external: its process id, for CPU, memory and fds (0: not measured)")
	fs.IntVar(&o.rounds, "rounds", 3, "rounds of every load; each figure is the median")
	fs.IntVar(&o.workers, "workers", 32, "concurrent clients of the connect, socks and keepalive loads")
	fs.IntVar(&o.count, "count", 100000, "at most this many operations per phase (one load, one proxy, one round)")
	fs.DurationVar(&o.duration, "duration", 3*time.Second, "at most this long per phase")
	fs.Int64Var(&o.bulkMiB, "bulk", 512, "MiB each way through the bulk tunnel")
	fs.DurationVar(&o.bulkTimeout, "bulk-timeout", 120*time.Second, "at most this long per bulk transfer")
	fs.IntVar(&o.idleN, "idle", 9000, "idle tunnels to open")
	fs.DurationVar(&o.idleTime, "idle-time", 90*time.Second, "at most this long to open them")
	fs.DurationVar(&o.idleSettle, "idle-settle", 2*time.Second, "how long they idle before the proxy is measured")
	fs.IntVar(&o.domains, "domains", 2_000_000, "rules load: category domains")
	fs.IntVar(&o.globs, "globs", 10_000, "rules load: globs")
	fs.IntVar(&o.nofile, "nofile", 20000, "open files limit (soft and hard) of the proxies the harness starts")
	fs.DurationVar(&o.twWait, "timewait-wait", 30*time.Second, "before each load, wait at most this long while connections in TIME_WAIT hold over 15,000 ports")
	fs.StringVar(&o.jsonOut, "json", "", "also write every figure as JSON to this file")
	fs.StringVar(&o.markdown, "markdown", "", "also write the tables to this file")
	fs.StringVar(&o.profileDir, "profile", "", "write CPU profiles of Sluice (from its admin listener) during the first round of each load into this folder: connect.pprof, ...")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	for _, p := range strings.Split(*proxies, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		if !slices.Contains(proxyNames, p) {
			return nil, fmt.Errorf("-proxies: unknown proxy %q", p)
		}
		o.proxies = append(o.proxies, p)
	}
	if slices.Contains(o.proxies, "external") && o.extHTTP == "" && o.extSOCKS == "" {
		return nil, fmt.Errorf("-proxies external needs -http or -socks")
	}
	for _, l := range strings.Split(*loads, ",") {
		if l = strings.TrimSpace(l); l == "" {
			continue
		}
		if l == "cpu" { // CPU is measured with connect and bulk
			continue
		}
		if !slices.Contains(allLoads, l) {
			return nil, fmt.Errorf("-loads: unknown load %q (want %s)", l, strings.Join(allLoads, ","))
		}
		o.loads = append(o.loads, l)
	}
	if o.rounds < 1 || o.workers < 1 || o.count < 1 || o.duration <= 0 || o.bulkMiB < 1 || o.idleN < 0 {
		return nil, fmt.Errorf("-rounds, -workers, -count, -duration and -bulk must be positive")
	}
	return o, nil
}

func main() {
	o, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(2)
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	rep, err := run(ctx, o)
	if rep != nil {
		var b strings.Builder
		rep.writeMarkdown(&b, o)
		os.Stdout.WriteString(b.String())
		if o.markdown != "" {
			if werr := os.WriteFile(o.markdown, []byte(b.String()), 0o644); werr != nil && err == nil {
				err = werr
			}
		}
		if o.jsonOut != "" {
			if werr := rep.writeJSON(o.jsonOut); werr != nil && err == nil {
				err = werr
			}
		}
		if err == nil && rep.Mismatches > 0 {
			err = fmt.Errorf("%d operations got bytes the origin did not send", rep.Mismatches)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

// raiseNofile lets the harness hold both ends of every idle tunnel:
// it raises its own open files limit as far as it may.
func raiseNofile(want uint64) {
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) != nil {
		return
	}
	if lim.Max < want {
		up := syscall.Rlimit{Cur: want, Max: want}
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &up) == nil { // root may
			return
		}
	}
	lim.Cur = lim.Max
	syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// run starts the origins and the proxies, runs the loads, and stops
// everything it started, also on error or signal.
func run(ctx context.Context, o *options) (*report, error) {
	raiseNofile(uint64(2*o.idleN + 8192))
	rep := newReport(o)
	e := &env{o: o}
	var err error
	if e.http, err = startOrigin(serveHTTP); err != nil {
		return nil, err
	}
	defer e.http.close()
	if e.bulk, err = startOrigin(func(c net.Conn) { serveBulk(c, o.bulkTimeout) }); err != nil {
		return nil, err
	}
	defer e.bulk.close()
	if e.echo, err = startOrigin(serveEcho); err != nil {
		return nil, err
	}
	defer e.echo.close()
	defer cleanupFloor()
	origins := []string{e.http.addr, e.bulk.addr, e.echo.addr}

	var targets []*target
	defer func() {
		for _, t := range targets {
			if t.stop != nil {
				t.stop()
			}
		}
	}()
	for _, p := range o.proxies {
		var t *target
		switch p {
		case "squid":
			t, err = startSquid(ctx, o)
		case "microsocks":
			t, err = startMicrosocks(ctx, o)
		case "haproxy":
			t, err = startHAProxy(ctx, o, origins)
		case "floor", "floor-rw", "floor-splice", "forward":
			for _, k := range floorKinds {
				if k.proxy == p {
					t, err = startFloor(ctx, o, k, origins)
				}
			}
		case "sluice":
			t, err = startSluice(ctx, o, "Sluice", nil)
		case "external":
			t = &target{name: "proxy", http: o.extHTTP, socks: o.extSOCKS, pid: o.extPID}
		}
		if err != nil {
			return nil, err
		}
		progress("started %s (http %q, socks5 %q, forwarders %q, pid %d)", t.name, t.http, t.socks, t.forwards(), t.pid)
		targets = append(targets, t)
		rep.Targets = append(rep.Targets, t.name)
		rep.Via[t.name] = t.tunnelVia().String()
	}
	rep.machine(o)
	for _, l := range o.loads {
		if ctx.Err() != nil {
			break
		}
		waitTimeWait(15000, o.twWait)
		switch l {
		case "connect", "socks", "keepalive":
			e.rateLoad(ctx, rep, l, targets)
		case "bulk":
			e.bulkLoad(ctx, rep, targets)
		case "idle":
			if err := e.idleLoad(ctx, rep, targets); err != nil {
				return rep, err
			}
		case "rules":
			if err := e.rulesLoad(ctx, rep, targets); err != nil {
				return rep, err
			}
		}
	}
	rep.LoadEnd = loadavg()
	return rep, ctx.Err()
}
