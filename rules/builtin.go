package rules

import (
	"embed"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
)

// BuiltinPrefix introduces a list shipped inside Sluice: "builtin:doh". A
// rule uses one like a category ("category:NAME"); the category's name is
// the whole pattern, "builtin:doh", which no configured category can take
// (their names have no ':').
const BuiltinPrefix = "builtin:"

// builtinFS holds the built-in lists, one plain list file each, named after
// the list: builtin/doh.txt is "builtin:doh". They are refreshed by hand;
// each file's header names its sources.
//
//go:embed builtin/*.txt
var builtinFS embed.FS

// Builtins returns the names of the built-in lists, sorted: ["builtin:doh"].
func Builtins() []string {
	ents, _ := builtinFS.ReadDir("builtin")
	var out []string
	for _, e := range ents {
		if name, ok := strings.CutSuffix(e.Name(), ".txt"); ok {
			out = append(out, BuiltinPrefix+name)
		}
	}
	slices.Sort(out)
	return out
}

// IsBuiltin reports whether name, a category name or a source's path, is
// one of the built-in lists.
func IsBuiltin(name string) bool {
	return strings.HasPrefix(name, BuiltinPrefix) && slices.Contains(Builtins(), name)
}

// openList opens a list file, or the built-in list of that name. A real
// path never looks like one: config paths are absolute.
func openList(file string) (io.ReadCloser, error) {
	if strings.HasPrefix(file, BuiltinPrefix) {
		f, err := builtinFS.Open("builtin/" + strings.TrimPrefix(file, BuiltinPrefix) + ".txt")
		if err != nil {
			return nil, fmt.Errorf("rules: unknown built-in list %q", file)
		}
		return f, nil
	}
	return os.Open(file)
}

// readBuiltin reads the built-in list name into cl; its source's Path is
// the list's name.
func readBuiltin(cl *CategoryList, name string) SourceStats {
	st := SourceStats{Source: Source{Path: name}}
	readFile(cl, name, "", &st)
	return st
}

// LoadBuiltin reads the built-in list name ("builtin:doh") as a category,
// for commands that show a built-in list no rule uses; ok is false when
// there is no such list.
func LoadBuiltin(name string) (cl *CategoryList, ok bool) {
	if !IsBuiltin(name) {
		return nil, false
	}
	cl = &CategoryList{Name: name}
	cl.Sources = append(cl.Sources, readBuiltin(cl, name))
	return cl, true
}
