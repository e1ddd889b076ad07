package server

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/sluiceproxy/sluice/rules"
)

// missingFetchTimeout bounds the downloads of the remote sources that have
// no copy yet, made before a start or a reload reads the lists.
const missingFetchTimeout = time.Minute

// loadSources reads the lists of cfg without ever letting a list problem
// open the filter:
//
//   - a remote source that a rule uses and that has no copy yet is
//     downloaded first (not by Validate, which never downloads);
//   - on a reload, a local source that has become missing, unreadable,
//     empty or unparseable is read from its last good copy;
//   - a source that a rule uses and that is still unusable is an error
//     naming the config file and line, unless it is marked optional: serve
//     refuses to start, a reload keeps the running rules. Validate returns
//     the Set and leaves the verdict to its caller (Set.SourceErrors).
//
// After a good load, the last good copies of changed local sources are
// written to the cache folder.
func (s *Server) loadSources(cfg *rules.Config) (*rules.Set, error) {
	if !s.validate {
		s.fetchMissing(cfg)
	}
	reload := s.state.Load() != nil
	set, err := rules.LoadSetWith(cfg, rules.LoadOptions{LastGood: reload})
	if err != nil {
		return nil, err
	}
	s.logSources(set)
	if s.validate {
		return set, nil
	}
	if errs := set.SourceErrors(); len(errs) > 0 {
		return nil, &SourcesError{Errs: errs}
	}
	if err := rules.WriteLastGood(set); err != nil {
		s.log.Warn("could not keep a last good copy of a list", "err", err)
	}
	return set, nil
}

// SourcesError lists the unusable sources that keep a config from serving.
type SourcesError struct{ Errs []error }

func (e *SourcesError) Error() string {
	lines := make([]string, len(e.Errs))
	for i, err := range e.Errs {
		lines[i] = err.Error()
	}
	return strings.Join(lines, "; ")
}

func (e *SourcesError) Unwrap() []error { return e.Errs }

// fetchMissing downloads the remote sources that rules use, that are not
// optional and that have no copy yet. Failures are logged by the Fetcher;
// SourceErrors then reports the source.
func (s *Server) fetchMissing(cfg *rules.Config) {
	used := cfg.UsedCategories()
	var missing []rules.Source
	for _, name := range sortedKeys(cfg.Categories) {
		if !used[name] {
			continue
		}
		for _, src := range cfg.Categories[name] {
			if src.URL != "" && !src.Optional && !exists(cfg.CachePath(src)) {
				missing = append(missing, src)
			}
		}
	}
	if len(missing) == 0 {
		return
	}
	client, err := NewFetchClient(cfg)
	if err != nil {
		return // the routes are broken: build reports it
	}
	ctx, cancel := context.WithTimeout(context.Background(), missingFetchTimeout)
	defer cancel()
	f := &Fetcher{Client: client, Logger: s.log}
	for _, src := range missing {
		_, _ = f.Fetch(ctx, cfg, src, nil)
	}
}

// logSources logs every source that is unusable or has invalid lines.
func (s *Server) logSources(set *rules.Set) {
	for _, name := range sortedKeys(set.Categories) {
		c := set.Categories[name]
		for _, src := range c.Sources {
			err := src.Problem()
			switch {
			case err == nil:
			case src.LastGood != "":
				s.log.Error("category source unusable; keeping its last good entries", "category", c.Name,
					"source", src.Source.String(), "entries", src.Entries, "copy", src.LastGood, "err", err)
			case errors.Is(err, rules.ErrNotDownloaded):
				s.log.Warn("remote category source not downloaded yet; the category lacks its entries", "category", c.Name, "err", err)
			default:
				s.log.Warn("category source unusable; the category lacks its entries", "category", c.Name,
					"source", src.Source.String(), "err", err)
			}
			for _, e := range src.Errors {
				s.log.Warn("invalid list line skipped", "category", c.Name, "err", e)
			}
		}
	}
}

// usersError names the config file and the line of its `users` key in an
// error about the users file.
func usersError(cfg *rules.Config, err error) error {
	return &rules.ParseError{File: configName(cfg), Line: cfg.UsersLine, Err: fmt.Errorf("users: %w", err)}
}

// configName is the config's file for errors.
func configName(cfg *rules.Config) string {
	if cfg.File == "" {
		return "default.yaml"
	}
	return cfg.File
}
