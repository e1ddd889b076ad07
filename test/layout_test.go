package test

import (
	"go/parser"
	"go/token"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

const mod = "github.com/sluiceproxy/sluice"

func goList(t *testing.T, args ...string) []string {
	t.Helper()
	out, err := exec.Command("go", append([]string{"list"}, args...)...).Output()
	if err != nil {
		t.Fatalf("go list %v: %v", args, err)
	}
	return strings.Fields(string(out))
}

// TestImportDirection keeps the package graph flowing one way:
// client -> front end -> filter -> rules, front ends -> dial/relay.
func TestImportDirection(t *testing.T) {
	forbidden := map[string][]string{
		"../rules":       {mod + "/filter", mod + "/proxy", mod + "/socks", mod + "/proxy/dial", mod + "/proxy/relay", mod + "/proxy/server"},
		"../filter":      {mod + "/proxy", mod + "/socks", mod + "/proxy/dial", mod + "/proxy/relay", mod + "/proxy/server"},
		"../proxy/dial":  {mod + "/filter", mod + "/rules", mod + "/proxy", mod + "/socks"},
		"../proxy/relay": {mod + "/filter", mod + "/rules", mod + "/proxy", mod + "/socks", mod + "/proxy/dial"},
		"../proxy":       {mod + "/socks", mod + "/proxy/server"},
		// sniff reads a tunnel's first bytes for any front end: a leaf.
		"../proxy/sniff": {mod + "/filter", mod + "/rules", mod + "/proxy", mod + "/socks", mod + "/proxy/dial", mod + "/proxy/relay", mod + "/proxy/server"},
		"../socks":       {mod + "/proxy", mod + "/proxy/server"},
		// the transparent front end sits beside socks: below the composition root.
		"../proxy/transparent": {mod + "/socks", mod + "/proxy/server"},
		// reqid hands out ids to both front ends: standard library only.
		"../proxy/reqid": {mod + "/filter", mod + "/rules", mod + "/proxy", mod + "/socks", mod + "/proxy/dial", mod + "/proxy/relay", mod + "/proxy/server"},
		// observe is what front ends report for metrics: standard library only.
		"../proxy/observe": {mod + "/filter", mod + "/rules", mod + "/proxy", mod + "/socks", mod + "/proxy/dial", mod + "/proxy/relay", mod + "/proxy/server"},
		// dialtest starts real upstreams for tests: standard library only.
		"../proxy/dial/dialtest": {mod + "/filter", mod + "/rules", mod + "/proxy", mod + "/socks", mod + "/proxy/dial", mod + "/proxy/relay"},
	}
	for pkg, banned := range forbidden {
		deps := goList(t, "-deps", pkg)
		for _, b := range banned {
			if slices.Contains(deps, b) {
				t.Errorf("%s must not depend on %s", pkg, b)
			}
		}
	}
	// The load harness measures every proxy the same way and builds
	// anywhere: standard library only, nothing of ours.
	for _, d := range goList(t, "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", "../test/loadgen") {
		if d != mod+"/test/loadgen" {
			t.Errorf("test/loadgen must use the standard library only, not %s", d)
		}
	}
	// The engine is pure: no networking, files or logging among its direct imports.
	imports := goList(t, "-f", "{{range .Imports}}{{.}} {{end}}", "../filter")
	for _, b := range []string{"net", "os", "io/fs", "log/slog", "log"} {
		if slices.Contains(imports, b) {
			t.Errorf("filter must not import %s", b)
		}
	}
}

// TestFilterSyscallException holds package filter to its doc, file by
// file and for every platform: no file imports networking, files, logging,
// syscall or unsafe, but huge_linux.go, which may import syscall and
// unsafe (madvise for huge pages) and nothing else of these.
func TestFilterSyscallException(t *testing.T) {
	files, err := filepath.Glob("../filter/*.go")
	if err != nil || len(files) == 0 {
		t.Fatalf("no files in ../filter: %v", err)
	}
	banned := []string{"net", "os", "io/fs", "log/slog", "log", "syscall", "unsafe"}
	allowed := map[string][]string{"huge_linux.go": {"syscall", "unsafe"}}
	seen := false
	for _, f := range files {
		name := filepath.Base(f)
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, im := range af.Imports {
			path, _ := strconv.Unquote(im.Path.Value)
			if !slices.Contains(banned, path) {
				continue
			}
			if slices.Contains(allowed[name], path) {
				seen = true
				continue
			}
			t.Errorf("filter/%s imports %s: only huge_linux.go may import syscall and unsafe, and no file net, os or logging", name, path)
		}
	}
	if !seen {
		t.Error("huge_linux.go no longer imports syscall or unsafe: drop the exception from this test and the package doc")
	}
}

// TestPackageDocs fails on a package without a package comment.
func TestPackageDocs(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}}\t{{.Doc}}", "../...").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		path, doc, _ := strings.Cut(l, "\t")
		if strings.TrimSpace(doc) == "" {
			t.Errorf("package %s has no package comment", path)
		}
	}
}
