package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// The references below every real proxy: floor (peers/floor.c, the
// leanest CONNECT and SOCKS5 proxy there is: no filter, no log, epoll on
// every CPU), the same floor as a plain TCP port forwarder (no handshake
// at all), and HAProxy as a TCP port forwarder. A forwarder leads to one
// origin per port, so the harness starts it once its origins listen.

// floorBuild compiles the floor once per run, unless -floor names a
// binary.
var floorBuild struct {
	once sync.Once
	dir  string
	bin  string
	err  error
}

// floorSources are the floor's files in peers/.
var floorSources = []string{"floor.h", "floor.c", "floor_head.c"}

// floorBin returns the floor program: -floor, or peers/floor*.c compiled
// with cc -O2 into a temporary folder that cleanupFloor removes.
func floorBin(o *options) (string, error) {
	if o.floorBin != "" {
		return filepath.Abs(o.floorBin)
	}
	floorBuild.once.Do(func() {
		dir, err := os.MkdirTemp("", "sluice-loadgen-floor-build-")
		if err != nil {
			floorBuild.err = err
			return
		}
		floorBuild.dir = dir
		for _, f := range floorSources {
			src, err := peers.ReadFile("peers/" + f)
			if err == nil {
				err = os.WriteFile(filepath.Join(dir, f), src, 0o644)
			}
			if err != nil {
				floorBuild.err = err
				return
			}
		}
		cc, err := lookTool("cc")
		if err != nil {
			floorBuild.err = fmt.Errorf("floor: %w", err)
			return
		}
		bin := filepath.Join(dir, "floor")
		cmd := exec.Command(cc, "-O2", "-pthread", "-o", bin, "floor.c", "floor_head.c")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			floorBuild.err = fmt.Errorf("floor: cc -O2 -pthread floor.c floor_head.c: %v\n%s", err, out)
			return
		}
		floorBuild.bin = bin
	})
	return floorBuild.bin, floorBuild.err
}

// cleanupFloor removes what floorBin compiled.
func cleanupFloor() {
	if floorBuild.dir != "" {
		os.RemoveAll(floorBuild.dir)
	}
}

// floorKind is how a floor runs.
type floorKind struct {
	proxy string   // the -proxies name
	name  string   // its column
	args  []string // its flags besides -l or -f and -floor-flags
	fwd   bool     // a port forwarder (-f) rather than a proxy (-l)
}

// pipeSize is the floor's pipes (F_SETPIPE_SZ), as Sluice's: 1 MiB cut
// the floor's CPU per GiB from 0.36 s (the kernel's 64 KiB) to 0.26 s.
const pipeSize = "1048576"

var floorKinds = []floorKind{
	{proxy: "floor", name: "floor", args: []string{"-m", "auto", "-p", pipeSize}},
	{proxy: "floor-rw", name: "floor rw", args: []string{"-m", "rw"}},
	{proxy: "floor-splice", name: "floor splice", args: []string{"-m", "splice", "-p", pipeSize}},
	{proxy: "forward", name: "TCP forward", args: []string{"-m", "auto", "-p", pipeSize}, fwd: true},
}

// startFloor starts floor.c as k says; origins are the addresses a
// forwarder leads to, one port each.
func startFloor(ctx context.Context, o *options, k floorKind, origins []string) (*target, error) {
	bin, err := floorBin(o)
	if err != nil {
		return nil, err
	}
	t, err := inTempDir("floor", func(dir string) (*target, error) {
		args := append([]string(nil), k.args...)
		args = append(args, strings.Fields(o.floorFlags)...)
		t := &target{name: k.name}
		var addrs []string
		if k.fwd {
			t.fwd = map[string]string{}
			for _, dst := range origins {
				port, err := freePort()
				if err != nil {
					return nil, err
				}
				a := "127.0.0.1:" + port
				args = append(args, "-f", a+"="+dst)
				t.fwd[dst] = a
				addrs = append(addrs, a)
			}
		} else {
			port, err := freePort()
			if err != nil {
				return nil, err
			}
			a := "127.0.0.1:" + port
			args = append(args, "-l", a)
			t.http, t.socks = a, a // one port, like Sluice
			addrs = append(addrs, a)
		}
		logf := filepath.Join(dir, "floor.out")
		cmd, stop, err := launch(ctx, logf, o.nofile, addrs, "", 30*time.Second, bin, args...)
		if err != nil {
			return nil, err
		}
		t.pid, t.stop = cmd.Process.Pid, stop
		return t, nil
	})
	if err != nil {
		return nil, err
	}
	t.start = func(ctx context.Context) (*target, error) { return startFloor(ctx, o, k, origins) }
	return t, nil
}

// startHAProxy starts HAProxy in the foreground (-db) as a TCP port
// forwarder to each origin: peers/haproxy.cfg, plus one listen section per
// origin.
func startHAProxy(ctx context.Context, o *options, origins []string) (*target, error) {
	bin, err := lookTool(o.haproxyBin)
	if err != nil {
		return nil, err
	}
	t, err := inTempDir("haproxy", func(dir string) (*target, error) {
		cfg, err := peerConfig("haproxy.cfg", "", dir, o.nofile)
		if err != nil {
			return nil, err
		}
		t := &target{name: "HAProxy", fwd: map[string]string{}}
		var addrs []string
		for i, dst := range origins {
			port, err := freePort()
			if err != nil {
				return nil, err
			}
			a := "127.0.0.1:" + port
			cfg += fmt.Sprintf("\nlisten origin%d\n    bind %s\n    server origin %s\n", i, a, dst)
			t.fwd[dst] = a
			addrs = append(addrs, a)
		}
		cf := filepath.Join(dir, "haproxy.cfg")
		if err := os.WriteFile(cf, []byte(cfg), 0o644); err != nil {
			return nil, err
		}
		logf := filepath.Join(dir, "haproxy.out")
		cmd, stop, err := launch(ctx, logf, o.nofile, addrs, "", 30*time.Second, bin, "-db", "-f", cf)
		if err != nil {
			return nil, err
		}
		t.pid, t.stop = cmd.Process.Pid, stop
		return t, nil
	})
	if err != nil {
		return nil, err
	}
	t.start = func(ctx context.Context) (*target, error) { return startHAProxy(ctx, o, origins) }
	return t, nil
}
