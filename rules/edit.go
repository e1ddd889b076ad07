package rules

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// writeError says that path could not be written, and why, once: the
// temporary file's name and Go's step ("open", "rename") are the writer's
// business, not the user's.
func writeError(path string, err error) error {
	var pe *fs.PathError
	var le *os.LinkError
	switch {
	case errors.As(err, &pe):
		err = pe.Err
	case errors.As(err, &le):
		err = le.Err
	}
	return fmt.Errorf("rules: %w", &fs.PathError{Op: "write", Path: path, Err: err})
}

// WriteFileAtomic replaces the file at path with data: it writes a temporary
// file in the same folder, syncs it, gives it perm and renames it into
// place, so that a reader or a crash sees either the old or the new content,
// never half of it.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return writeError(path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err = f.Write(data); err != nil {
		return writeError(path, err)
	}
	if err = f.Chmod(perm); err != nil {
		return writeError(path, err)
	}
	if err = f.Sync(); err != nil {
		return writeError(path, err)
	}
	if err = f.Close(); err != nil {
		return writeError(path, err)
	}
	if err = os.Rename(tmp, path); err != nil {
		return writeError(path, err)
	}
	if d, derr := os.Open(dir); derr == nil { // make the rename durable
		d.Sync()
		d.Close()
	}
	return nil
}

// readForEdit returns a file's content and mode; a missing file is empty with mode 0644.
func readForEdit(path string) ([]byte, os.FileMode, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0o644, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("rules: %w", err)
	}
	perm := os.FileMode(0o644)
	if fi, err := os.Stat(path); err == nil {
		perm = fi.Mode().Perm()
	}
	return data, perm, nil
}

// lineDomain returns the normalized domain on one line of a plain list, or ""
// for comments, blank lines and anything else.
func lineDomain(line []byte) string {
	l := bytes.TrimSpace(bytes.TrimPrefix(line, utf8BOM))
	l = stripComment(l)
	if len(l) == 0 || bytes.ContainsAny(l, " \t") {
		return ""
	}
	l = bytes.TrimPrefix(l, []byte("*."))
	l = bytes.TrimPrefix(l, []byte("."))
	h, err := NormalizeHost(string(l))
	if err != nil {
		return ""
	}
	return h
}

// normalizeAll normalizes domains, failing on the first invalid one.
func normalizeAll(domains []string) ([]string, error) {
	out := make([]string, 0, len(domains))
	for _, d := range domains {
		h, err := NormalizeHost(strings.TrimPrefix(strings.TrimSpace(d), "."))
		if err != nil {
			return nil, err
		}
		out = append(out, h)
	}
	return out, nil
}

// AddDomains appends to the plain list file at path the domains it does not
// hold yet, one a line, normalized, keeping every existing line byte for byte
// (and the file's CRLF line ends, if it uses them). The file is created when
// missing and replaced atomically. It returns how many domains were added;
// an invalid domain is an error and nothing is written.
func AddDomains(path string, domains []string) (added int, err error) {
	want, err := normalizeAll(domains)
	if err != nil {
		return 0, err
	}
	data, perm, err := readForEdit(path)
	if err != nil {
		return 0, err
	}
	have := make(map[string]bool)
	for line := range bytes.SplitSeq(data, []byte("\n")) {
		if d := lineDomain(line); d != "" {
			have[d] = true
		}
	}
	eol := "\n"
	if bytes.Contains(data, []byte("\r\n")) {
		eol = "\r\n"
	}
	out := slices.Clip(data)
	if len(out) > 0 && out[len(out)-1] != '\n' {
		out = append(out, eol...)
	}
	for _, d := range want {
		if have[d] {
			continue
		}
		have[d] = true
		out = append(out, d...)
		out = append(out, eol...)
		added++
	}
	if added == 0 {
		return 0, nil
	}
	return added, WriteFileAtomic(path, out, perm)
}

// RemoveDomains deletes from the plain list file at path every line whose
// entry equals one of domains after normalization, keeping every other line
// byte for byte; the file is replaced atomically. A parent domain is not
// removed for a subdomain, nor the reverse. It returns how many lines were
// removed; a missing file removes nothing.
func RemoveDomains(path string, domains []string) (removed int, err error) {
	drop, err := normalizeAll(domains)
	if err != nil {
		return 0, err
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("rules: %w", err)
	}
	out := make([]byte, 0, len(data))
	for len(data) > 0 {
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line = data[:i+1]
		}
		data = data[len(line):]
		if d := lineDomain(line); d != "" && slices.Contains(drop, d) {
			removed++
			continue
		}
		out = append(out, line...)
	}
	if removed == 0 {
		return 0, nil
	}
	perm := os.FileMode(0o644)
	if fi, err := os.Stat(path); err == nil {
		perm = fi.Mode().Perm()
	}
	return removed, WriteFileAtomic(path, out, perm)
}

// AddCategorySource adds source (a path or URL, written as given) to
// category in the config file at cfgPath, creating the category, and the
// categories section, when missing. It edits the text in place, so comments,
// blank lines and the order of everything else survive; the file is
// replaced atomically. A source already listed is not added twice. The
// edited file must still parse; a config that is not valid YAML is an error
// and is left alone.
func AddCategorySource(cfgPath, category, source string) error {
	if err := checkCategoryName(category); err != nil {
		return err
	}
	if strings.TrimSpace(source) == "" {
		return errors.New("rules: empty source")
	}
	data, perm, err := readForEdit(cfgPath)
	if err != nil {
		return err
	}
	out, err := addCategorySource(data, category, source)
	if err != nil {
		return fmt.Errorf("rules: %s: %w", cfgPath, err)
	}
	if out == nil {
		return nil // already there
	}
	if _, err := Parse(cfgPath, out); err != nil {
		var pe *ParseError
		if !errors.As(err, &pe) || strings.Contains(pe.Err.Error(), "yaml") {
			return fmt.Errorf("rules: %s: edit would break the file: %w", cfgPath, err)
		}
		// Other validation errors (such as a rule naming a category not
		// added yet) existed before or are the caller's business.
	}
	return WriteFileAtomic(cfgPath, out, perm)
}

// addCategorySource returns the edited text, or nil when source is already listed.
func addCategorySource(data []byte, category, source string) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, err
	}
	lines := splitLines(data)
	eol := "\n"
	if bytes.Contains(data, []byte("\r\n")) {
		eol = "\r\n"
	}
	item := yamlScalar(source)
	var root *yaml.Node
	if len(doc.Content) > 0 {
		root = doc.Content[0]
	}
	if root == nil || isNull(root) {
		return appendBlock(data, eol, "categories:"+eol+"  "+category+": ["+item+"]"+eol), nil
	}
	if root.Kind != yaml.MappingNode || root.Style&yaml.FlowStyle != 0 {
		return nil, errors.New("config is not a block mapping")
	}
	cats, catsIdx := lookup(root, "categories")
	if cats == nil {
		return appendBlock(data, eol, "categories:"+eol+"  "+category+": ["+item+"]"+eol), nil
	}
	if isNull(cats) { // "categories:" with nothing under it
		key := root.Content[catsIdx]
		return insertLines(lines, key.Line, "  "+category+": ["+item+"]"+eol), nil
	}
	if cats.Kind != yaml.MappingNode || cats.Style&yaml.FlowStyle != 0 {
		return nil, errors.New("categories is not a block mapping")
	}
	val, idx := lookup(cats, category)
	if val == nil { // new category after the last one
		last := cats.Content[len(cats.Content)-2]
		end := blockEnd(lines, root, catsIdx, last.Column)
		indent := strings.Repeat(" ", last.Column-1)
		return insertLines(lines, end, indent+category+": ["+item+"]"+eol), nil
	}
	key := cats.Content[idx]
	for _, it := range seqItems(val) {
		if it.Kind == yaml.ScalarNode && it.Value == source {
			return nil, nil
		}
	}
	switch {
	case isNull(val): // "social:" with no value
		return replaceFrom(lines, key.Line, key.Column-1+len(key.Value), ": ["+item+"]", eol), nil
	case val.Kind == yaml.SequenceNode && val.Style&yaml.FlowStyle == 0 && len(val.Content) > 0:
		first := val.Content[0]
		dash := string(lines[first.Line-1][:first.Column-1]) // "    - "
		end := seqEnd(lines, val, key.Column)
		return insertLines(lines, end, dash+item+eol), nil
	case onOneLine(val) && (val.Kind == yaml.ScalarNode || val.Kind == yaml.SequenceNode || val.Kind == yaml.MappingNode):
		items := seqItems(val)
		parts := make([]string, 0, len(items)+1)
		for _, it := range items {
			if it.Kind == yaml.ScalarNode {
				parts = append(parts, yamlScalar(it.Value))
			} else {
				parts = append(parts, render(it))
			}
		}
		parts = append(parts, item)
		comment := ""
		if c := val.LineComment; c != "" {
			comment = " " + c
		} else if c := key.LineComment; c != "" {
			comment = " " + c
		}
		return replaceFrom(lines, val.Line, val.Column-1, "["+strings.Join(parts, ", ")+"]"+comment, eol), nil
	}
	return nil, fmt.Errorf("categories: %s: cannot edit this layout; add %q by hand", category, source)
}

// seqItems returns a sequence's items, or the node itself for a scalar or mapping.
func seqItems(n *yaml.Node) []*yaml.Node {
	switch {
	case isNull(n):
		return nil
	case n.Kind == yaml.SequenceNode:
		return n.Content
	}
	return []*yaml.Node{n}
}

// lookup returns the value of key in a mapping and the index of the key node.
func lookup(m *yaml.Node, key string) (*yaml.Node, int) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1], i
		}
	}
	return nil, -1
}

// onOneLine reports whether n and all its children start on n's line.
func onOneLine(n *yaml.Node) bool {
	for _, c := range n.Content {
		if c.Line != n.Line || !onOneLine(c) {
			return false
		}
	}
	return true
}

// maxLine is the last line any node under n starts on.
func maxLine(n *yaml.Node) int {
	m := n.Line
	for _, c := range n.Content {
		m = max(m, maxLine(c))
	}
	return m
}

func splitLines(data []byte) [][]byte {
	var lines [][]byte
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			lines = append(lines, data)
			break
		}
		lines = append(lines, data[:i+1])
		data = data[i+1:]
	}
	return lines
}

// blockEnd returns the line after which to insert a new entry at the end of
// the value of the root key at keyIdx: before the next root key, and before
// any blank lines and comments less indented than col that lead up to it.
func blockEnd(lines [][]byte, root *yaml.Node, keyIdx, col int) int {
	next := len(lines) + 1
	if keyIdx+2 < len(root.Content) {
		next = root.Content[keyIdx+2].Line
	}
	last := maxLine(root.Content[keyIdx+1])
	end := next - 1
	for end > last {
		l := lines[end-1]
		t := bytes.TrimSpace(l)
		indent := len(l) - len(bytes.TrimLeft(l, " "))
		if len(t) == 0 || t[0] == '#' && indent < col-1 {
			end--
			continue
		}
		break
	}
	return end
}

// seqEnd returns the last line of a block sequence that is the value of a
// key at column keyCol: lines after its last item that are more indented
// than the key belong to the item.
func seqEnd(lines [][]byte, seq *yaml.Node, keyCol int) int {
	end := maxLine(seq)
	for end < len(lines) {
		l := lines[end] // the line after end
		t := bytes.TrimSpace(l)
		indent := len(l) - len(bytes.TrimLeft(l, " "))
		if len(t) == 0 || t[0] == '#' || indent <= keyCol-1 || t[0] == '-' {
			break
		}
		end++
	}
	return end
}

// insertLines inserts text after line n (0 means at the top).
func insertLines(lines [][]byte, n int, text string) []byte {
	var out []byte
	for i, l := range lines {
		if i == n {
			out = append(out, text...)
		}
		out = append(out, l...)
		if i == len(lines)-1 && len(l) > 0 && l[len(l)-1] != '\n' && n > i {
			out = append(out, '\n')
		}
	}
	if n >= len(lines) {
		out = append(out, text...)
	}
	return out
}

// replaceFrom replaces line n (1-based) from byte col onwards with text.
func replaceFrom(lines [][]byte, n, col int, text, eol string) []byte {
	var out []byte
	for i, l := range lines {
		if i == n-1 {
			out = append(out, l[:min(col, len(l))]...)
			out = append(out, text...)
			out = append(out, eol...)
			continue
		}
		out = append(out, l...)
	}
	return out
}

// appendBlock appends text at the end of data, on a line of its own.
func appendBlock(data []byte, eol, text string) []byte {
	out := slices.Clip(data)
	if len(out) > 0 && out[len(out)-1] != '\n' {
		out = append(out, eol...)
	}
	return append(out, text...)
}

// yamlScalar writes s as a YAML flow scalar, quoted unless plainly safe.
func yamlScalar(s string) string {
	for _, r := range s {
		if !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || strings.ContainsRune("._/-", r)) {
			return strconv.Quote(s)
		}
	}
	if s == "" || s[0] == '-' {
		return strconv.Quote(s)
	}
	return s
}
