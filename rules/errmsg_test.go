package rules

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
)

// TestSourceErrorSaysTheSourceOnce: an unusable remote source is named
// once, not again by its cause.
func TestSourceErrorSaysTheSourceOnce(t *testing.T) {
	src := Source{URL: "https://u:pw@lists.example/x.txt"}
	e := &SourceError{Category: "ads", Source: src,
		Err: fmt.Errorf("rules: %s: %w (no cache file /c/x.list)", src, ErrNotDownloaded)}
	want := "category ads: source https://u:xxxxx@lists.example/x.txt is unusable: not downloaded yet (no cache file /c/x.list) (run 'sluice list update', or mark it {url: URL, optional: true})"
	if got := e.Error(); got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	if strings.Contains(e.Error(), "pw@") {
		t.Error("password shown")
	}
}

// TestWriteErrorNamesTheFile: a failed atomic write names the file the
// user asked for, not the temporary file beside it.
func TestWriteErrorNamesTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nosuch", "list.txt")
	err := WriteFileAtomic(path, []byte("x\n"), 0o644)
	var pe *fs.PathError
	if !errors.As(err, &pe) || pe.Path != path || pe.Op != "write" || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("err = %v, want a write error on %s", err, path)
	}
	if strings.Contains(err.Error(), ".tmp") {
		t.Errorf("err names the temporary file: %v", err)
	}
}
