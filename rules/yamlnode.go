package rules

// The YAML helpers of the config parser: decoding, errors at a line, and
// typed reads of scalars, lists and mappings.

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

func (p *cfgParser) decode(data []byte) (*yaml.Node, error) {
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil // empty file
		}
		return nil, p.yamlErr(err, data)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, p.errf(&extra, "only one YAML document is allowed")
	} else if !errors.Is(err, io.EOF) {
		return nil, p.yamlErr(err, data)
	}
	if doc.Kind == yaml.DocumentNode && len(doc.Content) > 0 {
		return resolveAlias(doc.Content[0]), nil
	}
	return nil, nil
}

// yamlErr turns a YAML syntax error into a *ParseError at the line that
// causes it. go-yaml reports a parser error at the start of the block that
// encloses the mistake, counted from 0, which can be far above it ("line 9:
// did not find expected key" for an indented list under "rules: []" at line
// 167), so the line is found again: the first one at which the file, cut
// after it, fails the same way (a binary search: a few parses). A line indented below a key whose value is
// already on the key's line is reported at that key, with what to do.
func (p *cfgParser) yamlErr(err error, data []byte) error {
	line, msg := yamlMessage(err)
	lines := strings.SplitAfter(string(data), "\n")
	failsAt := func(n int) bool { // the first n lines fail as the whole file does
		_, m := yamlMessage(yamlSyntax(strings.Join(lines[:n], "")))
		return m == msg
	}
	// The parser stops at its first error, so every cut after the line
	// that causes it fails the same way, and the cuts before it do not.
	if n := sort.Search(len(lines), func(i int) bool { return failsAt(i + 1) }) + 1; n <= len(lines) && failsAt(n) {
		line = n
	}
	if key, val, at, ok := valueAbove(lines, line); ok {
		return &ParseError{File: p.name, Line: at, Err: fmt.Errorf(
			"%s: %s ends here, so line %d, indented below it, belongs to nothing: delete %q to make the indented lines its value",
			key, val, line, val)}
	}
	return &ParseError{File: p.name, Line: line, Err: errors.New(msg)}
}

// yamlMessage splits a go-yaml error into its line (0 when it has none)
// and its message; a nil error gives "".
func yamlMessage(err error) (int, string) {
	if err == nil {
		return 0, ""
	}
	msg := err.Error()
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return line, msg[len(m[0]):]
	}
	return 0, strings.TrimPrefix(msg, "yaml: ")
}

// yamlSyntax returns the first error of parsing src, every document of it.
func yamlSyntax(src string) error {
	dec := yaml.NewDecoder(strings.NewReader(src))
	for {
		var n yaml.Node
		if err := dec.Decode(&n); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

// inlineValueRE matches a line "KEY: VALUE" (or "- KEY: VALUE") whose value
// is on the line, not a block scalar, an anchor or a tag alone.
var inlineValueRE = regexp.MustCompile(`^\s*(?:-\s+)?([^\s#:'"{\[][^:#]*?):[ \t]+([^\s#|>&!][^#]*?)\s*(?:#.*)?$`)

// valueAbove reports whether line (from 1) is indented below a "KEY: VALUE"
// line, the nearest line above it that is neither blank nor a comment, and
// returns that key, its value and its line.
func valueAbove(lines []string, line int) (key, val string, at int, ok bool) {
	if line < 2 || line > len(lines) {
		return "", "", 0, false
	}
	indent := func(s string) int { return len(s) - len(strings.TrimLeft(s, " ")) }
	for i := line - 2; i >= 0; i-- {
		t := strings.TrimSpace(lines[i])
		if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		m := inlineValueRE.FindStringSubmatch(strings.TrimRight(lines[i], "\r\n"))
		if m == nil || indent(lines[i]) >= indent(lines[line-1]) {
			return "", "", 0, false
		}
		return strings.TrimSpace(m[1]), m[2], i + 1, true
	}
	return "", "", 0, false
}

// errf returns a *ParseError at n's line.
func (p *cfgParser) errf(n *yaml.Node, format string, args ...any) error {
	line := 0
	if n != nil {
		line = n.Line
	}
	return &ParseError{File: p.name, Line: line, Err: fmt.Errorf(format, args...)}
}

func resolveAlias(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 100; i++ {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n == nil || n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// pair is one key and its value in a mapping.
type pair struct{ key, val *yaml.Node }

// pairs returns the entries of a mapping, refusing duplicate and non-scalar
// keys. A null value counts as an empty mapping.
func (p *cfgParser) pairs(n *yaml.Node, ctx string) ([]pair, error) {
	n = resolveAlias(n)
	if isNull(n) {
		return nil, nil
	}
	if n.Kind != yaml.MappingNode {
		return nil, p.errf(n, "%smust be a mapping", ctx)
	}
	out := make([]pair, 0, len(n.Content)/2)
	seen := make(map[string]int, len(n.Content)/2) // key -> its line
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolveAlias(n.Content[i]), resolveAlias(n.Content[i+1])
		if k.Kind != yaml.ScalarNode {
			return nil, p.errf(k, "%skeys must be plain strings", ctx)
		}
		if k.Value == "<<" {
			return nil, p.errf(k, "%smerge keys (<<) are not supported", ctx)
		}
		if first, dup := seen[k.Value]; dup {
			return nil, p.errf(k, "%sduplicate key %q (first on line %d): keep one of the two", ctx, k.Value, first)
		}
		seen[k.Value] = k.Line
		out = append(out, pair{k, v})
	}
	return out, nil
}

// list returns the items of a sequence; a scalar is a list of one, null is empty.
func (p *cfgParser) list(n *yaml.Node, ctx string) ([]*yaml.Node, error) {
	n = resolveAlias(n)
	switch {
	case isNull(n):
		return nil, nil
	case n.Kind == yaml.ScalarNode:
		return []*yaml.Node{n}, nil
	case n.Kind == yaml.SequenceNode:
		out := make([]*yaml.Node, len(n.Content))
		for i, c := range n.Content {
			out[i] = resolveAlias(c)
		}
		return out, nil
	}
	return nil, p.errf(n, "%smust be a string or a list", ctx)
}

// str returns a scalar's text.
func (p *cfgParser) str(n *yaml.Node, ctx string) (string, error) {
	n = resolveAlias(n)
	if n == nil || n.Kind != yaml.ScalarNode || isNull(n) {
		return "", p.errf(n, "%smust be a string", ctx)
	}
	return n.Value, nil
}

// strs returns a list of scalars' texts.
func (p *cfgParser) strs(n *yaml.Node, ctx string) ([]string, []*yaml.Node, error) {
	items, err := p.list(n, ctx)
	if err != nil {
		return nil, nil, err
	}
	out := make([]string, 0, len(items))
	for _, it := range items {
		s, err := p.str(it, ctx)
		if err != nil {
			return nil, nil, err
		}
		out = append(out, s)
	}
	return out, items, nil
}

func (p *cfgParser) boolean(n *yaml.Node, ctx string) (bool, error) {
	n = resolveAlias(n)
	if n == nil || n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" {
		return false, p.errf(n, "%smust be true or false", ctx)
	}
	b, err := strconv.ParseBool(strings.ToLower(n.Value))
	if err != nil {
		return false, p.errf(n, "%smust be true or false", ctx)
	}
	return b, nil
}

func (p *cfgParser) duration(n *yaml.Node, ctx string) (time.Duration, error) {
	s, err := p.str(n, ctx)
	if err != nil {
		return 0, err
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, p.errf(n, "%sinvalid duration %q (want a positive Go duration such as 30s, 5m, 24h)", ctx, s)
	}
	return d, nil
}

// path resolves a path against the config's folder.
func (p *cfgParser) path(s string) string {
	if filepath.IsAbs(s) {
		return filepath.Clean(s)
	}
	return filepath.Join(p.dir, s)
}
