package rules

// The YAML helpers of the config parser: decoding, errors at a line, and
// typed reads of scalars, lists and mappings.

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
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
		return nil, p.yamlErr(err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, p.errf(&extra, "only one YAML document is allowed")
	} else if !errors.Is(err, io.EOF) {
		return nil, p.yamlErr(err)
	}
	if doc.Kind == yaml.DocumentNode && len(doc.Content) > 0 {
		return resolveAlias(doc.Content[0]), nil
	}
	return nil, nil
}

func (p *cfgParser) yamlErr(err error) error {
	msg := err.Error()
	line := 0
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = msg[len(m[0]):]
	} else {
		msg = strings.TrimPrefix(msg, "yaml: ")
	}
	return &ParseError{File: p.name, Line: line, Err: errors.New(msg)}
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
	seen := make(map[string]bool, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolveAlias(n.Content[i]), resolveAlias(n.Content[i+1])
		if k.Kind != yaml.ScalarNode {
			return nil, p.errf(k, "%skeys must be plain strings", ctx)
		}
		if k.Value == "<<" {
			return nil, p.errf(k, "%smerge keys (<<) are not supported", ctx)
		}
		if seen[k.Value] {
			return nil, p.errf(k, "%sduplicate key %q", ctx, k.Value)
		}
		seen[k.Value] = true
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
