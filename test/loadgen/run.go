package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// rateLoad runs load l (connect, socks or keepalive) for o.rounds rounds:
// in each, for every target that speaks the protocol, direct and through
// the target in turn (A B B A).
func (e *env) rateLoad(ctx context.Context, rep *report, l string, targets []*target) {
	workerFor := func(t *target) func() worker {
		switch l {
		case "connect":
			if t == nil {
				return e.tunnelGet(viaDirect, "")
			}
			if t.http != "" {
				return e.tunnelGet(viaConnect, t.http)
			}
			if t.fwd != nil {
				return e.tunnelGet(viaForward, t.forwards())
			}
		case "socks":
			if t == nil {
				return e.tunnelGet(viaDirect, "")
			}
			if t.socks != "" {
				return e.tunnelGet(viaSOCKS, t.socks)
			}
		case "keepalive":
			if t == nil {
				return e.keepAlive("", false)
			}
			if t.http != "" {
				return e.keepAlive(t.http, false)
			}
			if t.fwd != nil {
				return e.keepAlive(t.fwd[e.http.addr], true)
			}
		}
		return nil
	}
	rl := rep.rate(l)
	for r := range e.o.rounds {
		for _, t := range targets {
			w := workerFor(t)
			if w == nil || ctx.Err() != nil {
				continue
			}
			// Direct and proxy in turn, A B B A (B A A B in odd rounds),
			// so that the two see the same machine.
			half, n := e.o.duration/2, max(e.o.count/2, 1)
			prof := e.profile(t, r, l, 2*e.o.duration)
			d, p := abba(r,
				func() phase { return e.runPhase(ctx, 0, workerFor(nil), half, n) },
				func() phase { return e.runPhase(ctx, t.pid, w, half, n) })
			prof()
			rl.Direct = append(rl.Direct, d.rate())
			rl.DirectErrors += d.errs
			rep.Mismatches += d.mismatch
			f := rl.fig(t.name)
			f.add(p, d)
			rep.Mismatches += p.mismatch
			progress("%s round %d: direct %.0f/s (%d ops, %d errors%s); %s %.0f/s = %.2fx, CPU %.2f s per 10,000 (%d ops, %d errors%s)",
				l, r+1, d.rate(), d.ops, d.errs, errNote(d.firstErr),
				t.name, p.rate(), ratio(p.rate(), d.rate()), per(p.cpu, float64(p.ops), 10000), p.ops, p.errs, errNote(p.firstErr))
		}
	}
}

// profile starts a CPU profile of t for about d, during the first round
// only, when -profile is set and t has an admin listener (Sluice); the
// returned function waits for it and writes o.profileDir/NAME.pprof.
func (e *env) profile(t *target, round int, name string, d time.Duration) func() {
	if e.o.profileDir == "" || t.admin == "" || round != 0 {
		return func() {}
	}
	secs := int(d.Seconds() + 0.999)
	done := make(chan struct{})
	go func() {
		defer close(done)
		path := filepath.Join(e.o.profileDir, name+".pprof")
		cl := &http.Client{Timeout: d + 30*time.Second}
		resp, err := cl.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", t.admin, secs))
		if err == nil {
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				err = fmt.Errorf("status %s", resp.Status)
			}
		}
		var f *os.File
		if err == nil {
			if f, err = os.Create(path); err == nil {
				_, err = io.Copy(f, resp.Body)
				if cerr := f.Close(); err == nil {
					err = cerr
				}
			}
		}
		if err != nil {
			progress("profile %s: %v", name, err)
			return
		}
		progress("profile of %s during %s: %s (go tool pprof -top %s)", t.name, name, path, path)
	}()
	return func() { <-done }
}

func errNote(err error) string {
	if err == nil {
		return ""
	}
	return "; first: " + err.Error()
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// per returns cpu seconds per unit operations, or -1 when unknown.
func per(cpu, ops, unit float64) float64 {
	if cpu < 0 || ops == 0 {
		return -1
	}
	return cpu / ops * unit
}

// bulkLoad is load 4: per round and target, each way, a transfer direct,
// two through the proxy, and one more direct (A B B A); the rate of each
// side is its bytes over its time.
func (e *env) bulkLoad(ctx context.Context, rep *report, targets []*target) {
	n := e.o.bulkMiB << 20
	b := rep.Bulk
	for r := range e.o.rounds {
		for _, t := range targets {
			if ctx.Err() != nil {
				return
			}
			v, addr := t.tunnelVia(), t.tunnelAddr()
			f := b.fig(t.name)
			f.Via = v.String()
			// The profile spans the four transfers each way; the direct
			// ones add no samples.
			prof := e.profile(t, r, "bulk", bulkProfileTime(n))
			var rates [2][2]float64 // [up, down][direct, proxy]
			var cpu [2]float64
			failed := false
			for i, up := range []bool{true, false} {
				var secs [2]float64 // seconds for n bytes, direct and proxy
				for _, side := range []int{0, 1, 1, 0} {
					if side == 0 {
						mbps, _, err := e.transfer(viaDirect, "", 0, up, n)
						if err != nil {
							b.DirectErrors++
							progress("bulk: direct: %v", err)
							failed = true
							continue
						}
						secs[0] += float64(n) / 1e6 / mbps
						continue
					}
					mbps, c, err := e.transfer(v, addr, t.pid, up, n)
					f.note(err, n)
					if err != nil {
						progress("bulk round %d: %s: %v", r+1, t.name, err)
						failed = true
						continue
					}
					secs[1] += float64(n) / 1e6 / mbps
					if c < 0 || cpu[i] < 0 {
						cpu[i] = -1
					} else {
						cpu[i] += c
					}
				}
				for side := range 2 {
					if secs[side] > 0 {
						rates[i][side] = 2 * float64(n) / 1e6 / secs[side]
					}
				}
			}
			prof()
			b.DirectUp, b.DirectDown = append(b.DirectUp, rates[0][0]), append(b.DirectDown, rates[1][0])
			if !failed {
				f.Up, f.Down = append(f.Up, rates[0][1]), append(f.Down, rates[1][1])
				f.UpRatio = append(f.UpRatio, ratio(rates[0][1], rates[0][0]))
				f.DownRatio = append(f.DownRatio, ratio(rates[1][1], rates[1][0]))
				if cpu[0] >= 0 && cpu[1] >= 0 {
					f.CPUPerGiB = append(f.CPUPerGiB, (cpu[0]+cpu[1])/(float64(4*n)/(1<<30)))
				}
			}
			progress("bulk round %d: %s (%s) up %.0f MB/s = %.2fx (direct %.0f), down %.0f MB/s = %.2fx (direct %.0f), CPU %.2f s up, %.2f s down",
				r+1, t.name, v, rates[0][1], ratio(rates[0][1], rates[0][0]), rates[0][0],
				rates[1][1], ratio(rates[1][1], rates[1][0]), rates[1][0], cpu[0], cpu[1])
		}
	}
	for _, f := range b.Targets {
		rep.Mismatches += f.Mismatch
	}
}

// bulkProfileTime is how long a profile of the bulk load lasts: eight
// transfers of n bytes at 500 MB/s.
func bulkProfileTime(n int64) time.Duration {
	return time.Duration(8 * float64(n) / 500e6 * float64(time.Second))
}

// idleLoad is load 6 for every target, through CONNECT and through SOCKS5
// separately (or through a forwarder), each on a freshly started proxy.
func (e *env) idleLoad(ctx context.Context, rep *report, targets []*target) error {
	for _, t := range targets {
		for _, v := range []via{viaConnect, viaSOCKS, viaForward} {
			if (v == viaConnect && t.http == "") || (v == viaSOCKS && t.socks == "") || (v == viaForward && t.fwd == nil) || ctx.Err() != nil {
				continue
			}
			if err := t.restart(ctx); err != nil {
				return fmt.Errorf("idle: restarting %s: %w", t.name, err)
			}
			addr := t.http
			switch v {
			case viaSOCKS:
				addr = t.socks
			case viaForward:
				addr = t.forwards()
			}
			progress("idle: opening %d tunnels through %s (%s)", e.o.idleN, t.name, v)
			r := e.idle(ctx, v, addr, t.pid, e.o.idleN)
			if t.start == nil {
				waitFDs(t.pid, r.FD0, 15*time.Second)
			}
			rep.idle(v).set(t.name, r)
			progress("idle: %s (%s): %d of %d held, %.1f KiB and %.2f fds each (RSS %d -> %d KiB, fds %d -> %d), %d failed%s",
				t.name, v, r.Held, r.Wanted, r.KiB, r.FDs, r.RSS0, r.RSS1, r.FD0, r.FD1, r.Failed, strNote(r.Error))
		}
	}
	return nil
}

func strNote(s string) string {
	if s == "" {
		return ""
	}
	return "; first error: " + s
}

// rulesLoad is load 7: the connect load against the Sluice of the run
// (no rules) and a second Sluice with o.domains category domains and
// o.globs globs, in turn (A B B A, B A A B in odd rounds).
func (e *env) rulesLoad(ctx context.Context, rep *report, targets []*target) error {
	var plain *target
	for _, t := range targets {
		if t.name == "Sluice" {
			plain = t
		}
	}
	if plain == nil {
		progress("rules: skipped, Sluice is not among -proxies")
		return nil
	}
	// Both fresh: the Sluice of the run may still hold what earlier loads
	// left (Go pools the splice pipes of closed tunnels, for one).
	if err := plain.restart(ctx); err != nil {
		return fmt.Errorf("rules: restarting Sluice: %w", err)
	}
	progress("rules: generating %d domains and %d globs, starting a second Sluice on them", e.o.domains, e.o.globs)
	t0 := time.Now()
	loaded, err := startSluice(ctx, e.o, "Sluice with rules", func(dir string) (string, error) {
		return writeRules(dir, 1, e.o.domains, e.o.globs)
	})
	if err != nil {
		return fmt.Errorf("rules: %w", err)
	}
	defer loaded.stop()
	rr := rep.Rules
	rr.Domains, rr.Globs, rr.StartSeconds = e.o.domains, e.o.globs, time.Since(t0).Seconds()
	for r := range e.o.rounds {
		if ctx.Err() != nil {
			return nil
		}
		half, n := e.o.duration/2, max(e.o.count/2, 1)
		run := func(t *target) func() phase {
			return func() phase {
				p := e.runPhase(ctx, t.pid, e.tunnelGet(viaConnect, t.http), half, n)
				progress("rules round %d: %s %.0f tunnels/s (%d ops, %d errors%s)", r+1, t.name, p.rate(), p.ops, p.errs, errNote(p.firstErr))
				return p
			}
		}
		pp, pr := abba(r, run(plain), run(loaded))
		for _, p := range []phase{pp, pr} {
			rr.Errors += p.errs
			rep.Mismatches += p.mismatch
			if p.firstErr != nil && rr.FirstError == "" {
				rr.FirstError = p.firstErr.Error()
			}
		}
		rate := [2]float64{pp.rate(), pr.rate()}
		rr.Plain, rr.Rules = append(rr.Plain, rate[0]), append(rr.Rules, rate[1])
		rr.Ratio = append(rr.Ratio, ratio(rate[1], rate[0]))
	}
	return nil
}
