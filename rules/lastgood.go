package rules

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// Last good copies of local sources.
//
// A remote list keeps its last good download in the cache folder; a local
// list gets the same protection from a copy that the running server writes
// there (in "lastgood/") whenever it has loaded the list successfully and
// the list changed since the copy was made. On a reload, a local source
// that has become missing, unreadable, empty or unparseable is read from
// that copy instead (LoadOptions.LastGood), so that an editor's truncating
// save, a deleted file or a full disk never empties a category. The copy
// lives on disk, not in memory: the server drops the parsed lists once the
// engine is compiled, and the copy costs no resident memory.

// lastGoodDir is the sub-folder of the cache folder holding the copies.
const lastGoodDir = "lastgood"

// LastGoodPath returns the file that holds the last good copy of a local
// source (a file, a folder, or a UT1 category folder): a stable name from
// the path, in the cache folder. It returns "" for a URL source, whose
// cache file is its last good copy, and for the embedded default config.
func (c *Config) LastGoodPath(src Source) string {
	if src.URL != "" || src.Path == "" || c.File == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(src.Path))
	base := strings.Map(func(r rune) rune {
		if 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '.' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, filepath.Base(src.Path))
	if len(base) > 64 {
		base = base[:64]
	}
	return filepath.Join(c.cacheDir(), lastGoodDir, hex.EncodeToString(sum[:8])+"-"+base+".list")
}

// lastGoodHeader is the first line of a copy: the source and the size and
// modification time of each file it was read from. A copy whose header
// matches is current and is not written again.
func lastGoodHeader(st SourceStats) string {
	var b strings.Builder
	fmt.Fprintf(&b, "! sluice: last good copy of %s;", st.Source.Path)
	for _, f := range st.Files {
		fi, err := os.Stat(f)
		if err != nil {
			return "" // changed under us: no header can describe it
		}
		fmt.Fprintf(&b, " %s %d %d;", f, fi.Size(), fi.ModTime().UnixNano())
	}
	return strings.ReplaceAll(b.String(), "\n", " ")
}

// WriteLastGood stores the last good copy of every local source of set
// that was read successfully and has changed since its copy was written
// (an unchanged source costs one stat per file). It returns the first
// error; the other copies are still written.
func WriteLastGood(set *Set) error {
	var first error
	for _, name := range mapKeys(set.Categories) {
		cl := set.Categories[name]
		for _, st := range cl.Sources {
			if st.Source.URL != "" || st.LastGood != "" || st.Problem() != nil {
				continue
			}
			if err := writeLastGood(set.Config, cl, st); err != nil && first == nil {
				first = err
			}
		}
	}
	return first
}

func writeLastGood(cfg *Config, cl *CategoryList, st SourceStats) (err error) {
	path := cfg.LastGoodPath(st.Source)
	header := lastGoodHeader(st)
	if path == "" || header == "" {
		return nil
	}
	if f, err := os.Open(path); err == nil {
		line, _ := bufio.NewReader(io.LimitReader(f, int64(len(header))+1)).ReadString('\n')
		f.Close()
		if strings.TrimSuffix(line, "\n") == header {
			return nil
		}
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("rules: last good copy: %w", err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("rules: last good copy: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	w := bufio.NewWriterSize(f, 64<<10)
	w.WriteString(header + "\n")
	for _, d := range cl.Block[st.block[0]:st.block[1]] {
		w.WriteString("||" + d + "^\n")
	}
	for _, d := range cl.Allow[st.allow[0]:st.allow[1]] {
		w.WriteString("@@||" + d + "^\n")
	}
	if err = w.Flush(); err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = f.Close()
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("rules: last good copy of %s: %w", st.Source, err)
	}
	return nil
}

// readLastGood reads the last good copy of an unusable local source into
// cl, keeping the source's problem in st.Err. Without a copy, st is left
// as it is.
func readLastGood(cfg *Config, cl *CategoryList, st *SourceStats) {
	path := cfg.LastGoodPath(st.Source)
	if path == "" {
		return
	}
	f, err := os.Open(path)
	if err != nil {
		return
	}
	defer f.Close()
	problem := st.Problem()
	nb, na := len(cl.Block), len(cl.Allow)
	ls, err := ParseListFormat(f, path, FormatAdblock, func(e Entry) { // as writeLastGood writes it
		if e.Allow {
			cl.Allow = append(cl.Allow, e.Domain)
		} else {
			cl.Block = append(cl.Block, e.Domain)
		}
	})
	if err != nil || ls.Entries == 0 {
		cl.Block, cl.Allow = cl.Block[:nb], cl.Allow[:na]
		return
	}
	st.Err = problem // still reported: the copy only stands in for the source
	st.LastGood, st.Entries = path, ls.Entries
}
