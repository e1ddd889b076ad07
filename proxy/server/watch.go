package server

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/fsnotify/fsnotify"
)

// debounce is how long a watched file must have been stable (no event, and
// no modification time that recent) before the watcher reloads, so that an
// editor's write-rename-chmod sequence or a list being rewritten in several
// steps causes one reload, not five, and is not read half-way. A file read
// between two steps of a slower rewrite is still safe: an empty config is
// refused and an unusable list keeps its last good entries.
const debounce = 300 * time.Millisecond

// watch reloads the rules whenever the config, the users file or a local
// list changes, until ctx is cancelled. It watches the parent folders, so
// files that are replaced by rename (as editors and `sluice list add` do)
// are still seen.
func (s *Server) watch(ctx context.Context) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	defer w.Close()
	var dirs []string
	watched := map[string]bool{}
	rewatch := func() {
		files := s.state.Load().watch
		watched = map[string]bool{}
		var want []string
		for _, f := range files {
			abs, err := filepath.Abs(f)
			if err != nil {
				continue
			}
			watched[abs] = true
			want = append(want, filepath.Dir(abs), abs) // a folder source is watched itself
		}
		slices.Sort(want)
		want = slices.Compact(want)
		for _, d := range dirs {
			if !slices.Contains(want, d) {
				_ = w.Remove(d)
			}
		}
		dirs = dirs[:0]
		for _, d := range want {
			if err := w.Add(d); err == nil {
				dirs = append(dirs, d)
			}
		}
	}
	rewatch()
	relevant := func(name string) bool {
		abs, err := filepath.Abs(name)
		if err != nil {
			return false
		}
		return watched[abs] || watched[filepath.Dir(abs)]
	}
	var timer *time.Timer
	var fire <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			if !relevant(ev.Name) || ev.Op == fsnotify.Chmod {
				continue
			}
			if timer == nil {
				timer = time.NewTimer(debounce)
			} else {
				timer.Reset(debounce)
			}
			fire = timer.C
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			s.log.Warn("file watcher", "err", err)
		case <-fire:
			if wait := debounce - sinceLastWrite(watched); wait > 0 {
				// A write whose event has not arrived (or was coalesced):
				// the file is not stable yet.
				timer.Reset(wait)
				continue
			}
			fire = nil
			if err := s.Reload(); err == nil {
				rewatch()
			}
		}
	}
}

// sinceLastWrite returns how long ago the most recently modified of files
// was modified. A file that cannot be read, or whose time is in the future
// (a clock set back), counts as stable, so that it never holds reloads off.
func sinceLastWrite(files map[string]bool) time.Duration {
	since := time.Duration(1<<63 - 1)
	now := time.Now()
	for f := range files {
		if fi, err := os.Stat(f); err == nil && !fi.IsDir() {
			if d := now.Sub(fi.ModTime()); d >= 0 {
				since = min(since, d)
			}
		}
	}
	return since
}
