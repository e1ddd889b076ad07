package server

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"time"

	"github.com/sluiceproxy/sluice/filter"
	"github.com/sluiceproxy/sluice/rules"
)

// exceptionsPoll is how often the running server looks at the temporary
// exceptions' state file and drops the exceptions that ended.
const exceptionsPoll = time.Second

// exceptionsFile is what the server last read of the state file.
type exceptionsFile struct {
	path string
	fi   os.FileInfo // nil: missing
	bad  bool        // the last read failed (logged once per change)
}

// exceptionsLoop keeps s.exc current until ctx ends: it reads the state
// file again when it changed (`sluice allow` replaces it atomically), and
// drops the exceptions that ended, without a reload. An unreadable or
// invalid file keeps the last good exceptions, with an error logged.
func (s *Server) exceptionsLoop(ctx context.Context) {
	t := time.NewTicker(exceptionsPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.refreshExceptions(time.Now())
		}
	}
}

// refreshExceptions is one step of exceptionsLoop.
func (s *Server) refreshExceptions(now time.Time) {
	path := s.state.Load().cfg.ExceptionsPath()
	f := &s.excFile
	fi, err := os.Stat(path)
	if path == "" || errors.Is(err, fs.ErrNotExist) {
		fi, err = nil, nil
	}
	changed := path != f.path || (fi == nil) != (f.fi == nil) ||
		fi != nil && (!os.SameFile(fi, f.fi) || !fi.ModTime().Equal(f.fi.ModTime()) || fi.Size() != f.fi.Size())
	if changed || err != nil {
		var list []rules.Exception
		if err == nil && fi != nil {
			list, err = rules.LoadExceptions(path)
		}
		if err != nil {
			if !f.bad || changed {
				s.log.Error("exceptions: file unusable; keeping the last good exceptions", "file", path, "err", err)
			}
			f.path, f.fi, f.bad = path, fi, true
			return
		}
		live, _ := filter.NewExceptions(list).Live(now)
		s.exc.Store(live)
		if fi != nil || f.fi != nil { // not at start without a file
			s.log.Info("exceptions loaded", "file", path, "exceptions", live.Len())
		}
		f.path, f.fi, f.bad = path, fi, false
		return
	}
	cur := s.exc.Load()
	if live, ended := cur.Live(now); len(ended) > 0 {
		s.exc.Store(live)
		for _, e := range ended {
			s.log.Info("exception ended", "exception", e.String())
		}
	}
}
