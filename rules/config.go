package rules

import (
	_ "embed"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// DefaultYAML is the embedded default configuration: listen on
// 127.0.0.1:3128 and allow everything. `sluice config default` prints it.
//
//go:embed default.yaml
var DefaultYAML []byte

// DefaultListen is the listen address when the config names none.
const DefaultListen = "127.0.0.1:3128"

// DefaultRefresh is how often a remote source is fetched when the config does not say.
const DefaultRefresh = 24 * time.Hour

// Direct is the route name for "no upstream".
const Direct = "direct"

// upstreamSchemes are the URL schemes an upstream hop may use.
var upstreamSchemes = []string{"http", "https", "socks5", "socks5h", "socks4a"}

// Default returns the embedded default configuration, freshly parsed.
func Default() *Config {
	cfg, err := Parse("", DefaultYAML)
	if err != nil {
		panic("rules: embedded default config is broken: " + err.Error())
	}
	return cfg
}

// LoadConfig reads and validates the config file at path. Errors in the
// content are *ParseError naming path and line.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("rules: read config: %w", err)
	}
	return Parse(path, data)
}

// Parse parses and validates a config held in data, read from file. Relative
// paths in it resolve against file's folder (the working folder when file is
// ""). Unknown keys, duplicate keys and every invalid value are errors; each
// error is a *ParseError with file and line, such as
// `sluice.yaml:12: rule 3: unknown category "socail"`. Defaults are filled
// in: Listen, Default, Timeouts, CacheDir (when file is set) and Refresh of
// URL sources.
func Parse(file string, data []byte) (cfg *Config, err error) {
	p := &cfgParser{name: file, cfg: &Config{}}
	if file == "" {
		p.name = "default.yaml"
		p.dir, _ = os.Getwd()
	} else {
		abs, aerr := filepath.Abs(file)
		if aerr != nil {
			return nil, fmt.Errorf("rules: config path: %w", aerr)
		}
		p.cfg.File = abs
		p.dir = filepath.Dir(abs)
	}
	defer func() { // the YAML library has panicked on hostile input before
		if r := recover(); r != nil {
			cfg, err = nil, &ParseError{File: p.name, Err: fmt.Errorf("invalid YAML: %v", r)}
		}
	}()
	root, err := p.decode(data)
	if err != nil {
		return nil, err
	}
	if err := p.parseRoot(root); err != nil {
		return nil, err
	}
	if err := p.validate(); err != nil {
		return nil, err
	}
	if err := p.checkNotEmpty(root); err != nil {
		return nil, err
	}
	p.fillDefaults()
	return p.cfg, nil
}

// cfgParser holds the state of one Parse.
type cfgParser struct {
	name string // file name for errors
	dir  string // folder that relative paths resolve against
	cfg  *Config

	catRefs  []nameRef // category:NAME in rules, checked after the whole file is read
	routeRef []nameRef // via:, upstream:, failover members
	groupRef []nameRef // groups: in rules

	checkResolvedSet bool // check_resolved was given
	verifyHostSet    bool // transparent: verify_host was given
}

// nameRef is a name used somewhere, with the context for its error.
type nameRef struct {
	node *yaml.Node
	ctx  string // "rule 3: " or ""
	name string
}

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): `)

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

func (p *cfgParser) parseRoot(root *yaml.Node) error {
	if root != nil && root.Kind != yaml.MappingNode && !isNull(root) {
		return p.errf(root, "config must be a mapping")
	}
	kvs, err := p.pairs(root, "")
	if err != nil {
		return err
	}
	c := p.cfg
	for _, kv := range kvs {
		k, v := kv.key, kv.val
		ctx := k.Value + ": "
		switch k.Value {
		case "listen":
			err = p.parseListen(v, ctx)
		case "default":
			var s string
			if s, err = p.str(v, ctx); err == nil {
				switch Action(s) {
				case Allow, Block:
					c.Default = Action(s)
				default:
					err = p.errf(v, "%smust be allow or block, not %q", ctx, s)
				}
			}
		case "hosts":
			err = p.parseHosts(v)
		case "categories":
			err = p.parseCategories(v)
		case "category_dirs":
			err = p.parseCategoryDirs(v)
		case "cache_dir":
			var s string
			if s, err = p.str(v, ctx); err == nil {
				c.CacheDir = p.path(s)
			}
		case "rules":
			err = p.parseRules(v)
		case "clients":
			c.Clients, err = p.prefixes(v, ctx)
		case "users":
			var s string
			if s, err = p.str(v, ctx); err == nil {
				c.Users, c.UsersLine = p.path(s), k.Line
			}
		case "groups":
			err = p.parseGroups(v)
		case "auth":
			err = p.parseAuth(v)
		case "socks":
			err = p.parseSocks(v)
		case "upstreams":
			err = p.parseUpstreams(v)
		case "upstream":
			var s string
			if s, err = p.str(v, ctx); err == nil {
				c.Upstream = s
				p.routeRef = append(p.routeRef, nameRef{v, ctx, s})
			}
		case "anonymize":
			c.Anonymize, err = p.boolean(v, ctx)
		case "check_resolved":
			var b bool
			if b, err = p.boolean(v, ctx); err == nil {
				c.CheckResolved, p.checkResolvedSet = b, true
			}
		case "deny_private":
			c.DenyPrivate, err = p.boolean(v, ctx)
		case "timeouts":
			err = p.parseTimeouts(v)
		case "sniff":
			var s string
			if s, err = p.str(v, ctx); err == nil {
				switch m := SniffMode(s); m {
				case SniffIP, SniffAll, SniffOff:
					c.Sniff = m
				default:
					err = p.errf(v, "%smust be ip, all or off, not %q", ctx, s)
				}
			}
		case "sniff_unnamed":
			var s string
			if s, err = p.str(v, ctx); err == nil {
				switch Action(s) {
				case Allow, Block:
					c.SniffUnnamed = Action(s)
				default:
					err = p.errf(v, "%smust be allow or block, not %q", ctx, s)
				}
			}
		case "transparent":
			err = p.parseTransparent(v)
		case "block_page":
			err = p.parseBlockPage(v)
		case "admin":
			err = p.parseAdmin(v, ctx)
		case "admin_clients":
			err = p.parseAdminClients(v, ctx)
		case "limits":
			err = p.parseLimits(v)
		case "shutdown_grace":
			c.ShutdownGrace, err = p.duration(v, ctx)
		case "access_log":
			err = p.parseAccessLog(v, ctx)
		case "log_format":
			err = p.parseLogFormat(v, ctx)
		case "pac":
			err = p.parsePAC(v)
		case "pid_file":
			var s string
			if s, err = p.str(v, ctx); err == nil {
				c.PidFile = p.path(s)
			}
		default:
			err = p.errf(k, "unknown key %q", k.Value)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// checkNotEmpty refuses a config with none of the keys that say what the
// proxy does (`rules`, `default`, `listen`): an empty or comments-only file
// is what a truncating save or a full disk leaves behind, and read as "no
// rules, default allow" it would open the filter.
func (p *cfgParser) checkNotEmpty(root *yaml.Node) error {
	if root != nil && root.Kind == yaml.MappingNode {
		for i := 0; i < len(root.Content); i += 2 {
			switch resolveAlias(root.Content[i]).Value {
			case "rules", "default", "listen":
				return nil
			}
		}
	}
	return p.errf(root, "no `rules`, `default` or `listen` key: an empty or comments-only config is refused "+
		"(write `default: allow` if an unfiltered proxy is really meant)")
}

func (p *cfgParser) parseListen(n *yaml.Node, ctx string) error {
	addrs, err := p.listenAddrs(n, ctx)
	if err != nil {
		return err
	}
	p.cfg.Listen = addrs
	return nil
}

// listenAddrs reads a list of host:port listen addresses.
func (p *cfgParser) listenAddrs(n *yaml.Node, ctx string) ([]string, error) {
	addrs, items, err := p.strs(n, ctx)
	if err != nil {
		return nil, err
	}
	for i, a := range addrs {
		host, port, err := net.SplitHostPort(a)
		if err == nil {
			var pn int
			pn, err = strconv.Atoi(port)
			if err == nil && (pn < 0 || pn > 65535) {
				err = errors.New("port out of range")
			}
		}
		if err == nil && host != "" {
			if _, perr := netip.ParseAddr(host); perr != nil {
				if _, herr := NormalizeHost(host); herr != nil {
					err = herr
				}
			}
		}
		if err != nil {
			return nil, p.errf(items[i], "%sinvalid address %q (want host:port, such as 127.0.0.1:3128)", ctx, a)
		}
	}
	return addrs, nil
}

func (p *cfgParser) parseHosts(n *yaml.Node) error {
	kvs, err := p.pairs(n, "hosts: ")
	if err != nil {
		return err
	}
	p.cfg.Hosts = make(map[string][]netip.Addr, len(kvs))
	for _, kv := range kvs {
		name, err := NormalizeHost(kv.key.Value)
		if err != nil {
			return p.errf(kv.key, "hosts: invalid host name %q", kv.key.Value)
		}
		if _, dup := p.cfg.Hosts[name]; dup {
			return p.errf(kv.key, "hosts: duplicate host %q", name)
		}
		ctx := fmt.Sprintf("hosts: %s: ", kv.key.Value)
		ips, items, err := p.strs(kv.val, ctx)
		if err != nil {
			return err
		}
		if len(ips) == 0 {
			return p.errf(kv.val, "%sno address", ctx)
		}
		for i, s := range ips {
			a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(s, "["), "]"))
			if err != nil || a.Zone() != "" {
				return p.errf(items[i], "%sinvalid IP address %q", ctx, s)
			}
			p.cfg.Hosts[name] = append(p.cfg.Hosts[name], a.Unmap())
		}
	}
	return nil
}

func (p *cfgParser) parseCategories(n *yaml.Node) error {
	kvs, err := p.pairs(n, "categories: ")
	if err != nil {
		return err
	}
	p.cfg.Categories = make(map[string][]Source, len(kvs))
	for _, kv := range kvs {
		name := kv.key.Value
		if err := checkCategoryName(name); err != nil {
			return p.errf(kv.key, "categories: %s", bare(err))
		}
		ctx := fmt.Sprintf("categories: %s: ", name)
		v := kv.val
		var items []*yaml.Node
		if v.Kind == yaml.MappingNode {
			items = []*yaml.Node{v}
		} else if items, err = p.list(v, ctx); err != nil {
			return err
		}
		srcs := make([]Source, 0, len(items))
		for _, it := range items {
			src, err := p.parseSource(it, ctx)
			if err != nil {
				return err
			}
			srcs = append(srcs, src)
		}
		p.cfg.Categories[name] = srcs
	}
	return nil
}

// parseSource parses "path", "https://url", {file: P} or {url: U, refresh: D},
// with format: and optional: in the mapping forms.
func (p *cfgParser) parseSource(n *yaml.Node, ctx string) (Source, error) {
	src := Source{Line: n.Line}
	if n.Kind == yaml.ScalarNode {
		s, err := p.str(n, ctx)
		if err != nil {
			return src, err
		}
		if strings.Contains(s, "://") {
			src.URL = s
		} else {
			src.Path = s
		}
	} else {
		kvs, err := p.pairs(n, ctx)
		if err != nil {
			return src, err
		}
		var refresh *yaml.Node
		for _, kv := range kvs {
			switch kv.key.Value {
			case "file", "path":
				if src.Path, err = p.str(kv.val, ctx+kv.key.Value+": "); err != nil {
					return src, err
				}
			case "url":
				if src.URL, err = p.str(kv.val, ctx+"url: "); err != nil {
					return src, err
				}
			case "refresh":
				refresh = kv.val
				if src.Refresh, err = p.duration(kv.val, ctx+"refresh: "); err != nil {
					return src, err
				}
			case "format":
				s, err := p.str(kv.val, ctx+"format: ")
				if err != nil {
					return src, err
				}
				if src.Format, err = ParseFormat(s); err != nil {
					return src, p.errf(kv.val, "%sformat: %s", ctx, err)
				}
			case "optional":
				if src.Optional, err = p.boolean(kv.val, ctx+"optional: "); err != nil {
					return src, err
				}
			default:
				return src, p.errf(kv.key, "%sunknown key %q (want file, or url and refresh; format, optional)", ctx, kv.key.Value)
			}
		}
		if (src.Path == "") == (src.URL == "") {
			return src, p.errf(n, "%sa source needs exactly one of file or url", ctx)
		}
		if refresh != nil && src.URL == "" {
			return src, p.errf(refresh, "%srefresh applies to url sources only", ctx)
		}
	}
	if src.URL != "" {
		u, err := url.Parse(src.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return src, p.errf(n, "%sinvalid list URL %q (want http:// or https://)", ctx, redactURL(src.URL))
		}
		if src.Refresh == 0 {
			src.Refresh = DefaultRefresh
		}
	} else {
		if src.Path == "" {
			return src, p.errf(n, "%sempty path", ctx)
		}
		src.Path = p.path(src.Path)
	}
	return src, nil
}

func (p *cfgParser) parseCategoryDirs(n *yaml.Node) error {
	items, err := p.list(n, "category_dirs: ")
	if err != nil {
		return err
	}
	for _, it := range items {
		cd := CategoryDir{Line: it.Line}
		var onlyNodes []*yaml.Node
		if it.Kind == yaml.ScalarNode {
			if cd.Path, err = p.str(it, "category_dirs: "); err != nil {
				return err
			}
		} else {
			kvs, err := p.pairs(it, "category_dirs: ")
			if err != nil {
				return err
			}
			for _, kv := range kvs {
				switch kv.key.Value {
				case "path":
					if cd.Path, err = p.str(kv.val, "category_dirs: path: "); err != nil {
						return err
					}
				case "only":
					names, nodes, err := p.strs(kv.val, "category_dirs: only: ")
					if err != nil {
						return err
					}
					for i, name := range names {
						if err := checkCategoryName(name); err != nil {
							return p.errf(nodes[i], "category_dirs: only: %s", bare(err))
						}
					}
					cd.Only, onlyNodes = names, nodes
				default:
					return p.errf(kv.key, "category_dirs: unknown key %q (want path, only)", kv.key.Value)
				}
			}
		}
		if cd.Path == "" {
			return p.errf(it, "category_dirs: missing path")
		}
		cd.Path = p.path(cd.Path)
		if fi, err := os.Stat(cd.Path); err != nil || !fi.IsDir() {
			return p.errf(it, "category_dirs: %s is not a folder", cd.Path)
		}
		for i, name := range cd.Only {
			if fi, err := os.Stat(filepath.Join(cd.Path, name)); err != nil || !fi.IsDir() {
				return p.errf(onlyNodes[i], "category_dirs: only: no category folder %q in %s", name, cd.Path)
			}
		}
		p.cfg.CategoryDirs = append(p.cfg.CategoryDirs, cd)
	}
	return nil
}

func (p *cfgParser) prefixes(n *yaml.Node, ctx string) ([]netip.Prefix, error) {
	ss, items, err := p.strs(n, ctx)
	if err != nil {
		return nil, err
	}
	out := make([]netip.Prefix, 0, len(ss))
	for i, s := range ss {
		pfx, err := ParsePrefix(s)
		if err != nil {
			return nil, p.errf(items[i], "%s%s", ctx, bare(err))
		}
		out = append(out, pfx)
	}
	return out, nil
}

func (p *cfgParser) parseGroups(n *yaml.Node) error {
	kvs, err := p.pairs(n, "groups: ")
	if err != nil {
		return err
	}
	p.cfg.Groups = make(map[string][]string, len(kvs))
	for _, kv := range kvs {
		users, _, err := p.strs(kv.val, fmt.Sprintf("groups: %s: ", kv.key.Value))
		if err != nil {
			return err
		}
		p.cfg.Groups[kv.key.Value] = users
	}
	return nil
}

func (p *cfgParser) parseSocks(n *yaml.Node) error {
	kvs, err := p.pairs(n, "socks: ")
	if err != nil {
		return err
	}
	for _, kv := range kvs {
		switch kv.key.Value {
		case "udp":
			if p.cfg.Socks.UDP, err = p.boolean(kv.val, "socks: udp: "); err != nil {
				return err
			}
		default:
			return p.errf(kv.key, "socks: unknown key %q (want udp)", kv.key.Value)
		}
	}
	return nil
}

func (p *cfgParser) parseTimeouts(n *yaml.Node) error {
	kvs, err := p.pairs(n, "timeouts: ")
	if err != nil {
		return err
	}
	t := &p.cfg.Timeouts
	for _, kv := range kvs {
		ctx := "timeouts: " + kv.key.Value + ": "
		switch kv.key.Value {
		case "dial":
			t.Dial, err = p.duration(kv.val, ctx)
		case "handshake":
			t.Handshake, err = p.duration(kv.val, ctx)
		case "idle":
			t.Idle, err = p.duration(kv.val, ctx)
		case "lifetime":
			if v := resolveAlias(kv.val); v != nil && v.Kind == yaml.ScalarNode && v.Value == "0" {
				t.Lifetime = 0 // unlimited, the default
				continue
			}
			t.Lifetime, err = p.duration(kv.val, ctx)
		default:
			err = p.errf(kv.key, "timeouts: unknown key %q (want dial, handshake, idle, lifetime)", kv.key.Value)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (p *cfgParser) parseLimits(n *yaml.Node) error {
	kvs, err := p.pairs(n, "limits: ")
	if err != nil {
		return err
	}
	l := &p.cfg.Limits
	for _, kv := range kvs {
		ctx := "limits: " + kv.key.Value + ": "
		switch kv.key.Value {
		case "max_conns":
			l.MaxConns, err = p.count(kv.val, ctx)
		case "per_client":
			l.PerClient, err = p.count(kv.val, ctx)
		default:
			err = p.errf(kv.key, "limits: unknown key %q (want max_conns, per_client)", kv.key.Value)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// count returns a positive integer.
func (p *cfgParser) count(n *yaml.Node, ctx string) (int, error) {
	s, err := p.str(n, ctx)
	if err != nil {
		return 0, err
	}
	v, err := strconv.Atoi(s)
	if err != nil || v <= 0 {
		return 0, p.errf(n, "%sinvalid count %q (want a positive whole number such as 512)", ctx, s)
	}
	return v, nil
}

func (p *cfgParser) parseUpstreams(n *yaml.Node) error {
	kvs, err := p.pairs(n, "upstreams: ")
	if err != nil {
		return err
	}
	p.cfg.Upstreams = make(map[string]Upstream, len(kvs))
	for _, kv := range kvs {
		name := kv.key.Value
		ctx := fmt.Sprintf("upstream %q: ", name)
		if err := checkCategoryName(name); err != nil || name == Direct {
			return p.errf(kv.key, "upstreams: invalid name %q", name)
		}
		u := Upstream{Name: name, Line: kv.key.Line}
		v := kv.val
		switch v.Kind {
		case yaml.ScalarNode, yaml.SequenceNode:
			if u.Chain, err = p.chain(v, ctx); err != nil {
				return err
			}
		case yaml.MappingNode:
			sub, err := p.pairs(v, ctx)
			if err != nil {
				return err
			}
			var tlsNode, isoNode, urlNode *yaml.Node
			for _, skv := range sub {
				switch skv.key.Value {
				case "failover":
					var nodes []*yaml.Node
					if u.Failover, nodes, err = p.strs(skv.val, ctx+"failover: "); err != nil {
						return err
					}
					if len(u.Failover) == 0 {
						return p.errf(skv.val, "%sfailover: empty list", ctx)
					}
					for i, m := range u.Failover {
						p.routeRef = append(p.routeRef, nameRef{nodes[i], ctx + "failover: ", m})
					}
				case "chain", "url":
					if urlNode != nil {
						return p.errf(skv.key, "%sgive one of chain or url, once", ctx)
					}
					urlNode = skv.val
					if u.Chain, err = p.chain(skv.val, ctx+skv.key.Value+": "); err != nil {
						return err
					}
				case "isolate":
					s, err := p.str(skv.val, ctx+"isolate: ")
					if err != nil {
						return err
					}
					if !slices.Contains(IsolationModes, s) {
						return p.errf(skv.val, "%sisolate: unknown mode %q (want %s)", ctx, s, strings.Join(IsolationModes, ", "))
					}
					u.Isolate, isoNode = s, skv.val
				case "anonymize":
					b, err := p.boolean(skv.val, ctx+"anonymize: ")
					if err != nil {
						return err
					}
					u.Anonymize = &b
				case "tls_ca":
					s, err := p.str(skv.val, ctx+"tls_ca: ")
					if err != nil {
						return err
					}
					u.TLSCA, u.TLSCALine, tlsNode = p.path(s), skv.key.Line, skv.val
				default:
					return p.errf(skv.key, "%sunknown key %q (want url, chain, failover, anonymize, tls_ca, isolate)", ctx, skv.key.Value)
				}
			}
			if (len(u.Chain) == 0) == (len(u.Failover) == 0) {
				return p.errf(v, "%sneeds exactly one of chain or failover", ctx)
			}
			if tlsNode != nil && len(u.Chain) == 0 {
				return p.errf(tlsNode, "%stls_ca applies to a chain only", ctx)
			}
			if isoNode != nil {
				if err := checkIsolate(u); err != nil {
					return p.errf(isoNode, "%sisolate: %v", ctx, err)
				}
			}
		default:
			return p.errf(v, "%smust be a URL, a list of URLs, or a mapping", ctx)
		}
		p.cfg.Upstreams[name] = u
	}
	return nil
}

// chain parses one URL or a list of URLs (the hops of a chain).
func (p *cfgParser) chain(n *yaml.Node, ctx string) ([]string, error) {
	urls, items, err := p.strs(n, ctx)
	if err != nil {
		return nil, err
	}
	if len(urls) == 0 {
		return nil, p.errf(n, "%sempty chain", ctx)
	}
	for i, s := range urls {
		if err := checkUpstreamURL(s); err != nil {
			return nil, p.errf(items[i], "%shop %d: %v", ctx, i+1, err)
		}
	}
	return urls, nil
}

// checkUpstreamURL validates one hop; its errors never contain a password.
func checkUpstreamURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return errors.New("invalid URL")
	}
	if !slices.Contains(upstreamSchemes, u.Scheme) {
		return fmt.Errorf("unsupported scheme %q (want %s)", u.Scheme, strings.Join(upstreamSchemes, ", "))
	}
	if u.Hostname() == "" {
		return fmt.Errorf("missing host in %q", u.Redacted())
	}
	if port := u.Port(); port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("invalid port in %q", u.Redacted())
		}
	}
	if u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("unexpected path or query in %q", u.Redacted())
	}
	return nil
}

// redactURL hides a password in a URL meant for an error message.
func redactURL(s string) string {
	if u, err := url.Parse(s); err == nil {
		return u.Redacted()
	}
	if i := strings.LastIndexByte(s, '@'); i >= 0 {
		return "…" + s[i:]
	}
	return s
}

// bare drops the package prefix from an error, for use inside a ParseError.
func bare(err error) string {
	return strings.TrimPrefix(err.Error(), "rules: ")
}

// validate checks the references between parts of the config.
func (p *cfgParser) validate() error {
	c := p.cfg
	for _, r := range p.catRefs {
		if err := p.checkCategory(r); err != nil {
			return err
		}
	}
	for _, r := range p.routeRef {
		if r.name == Direct {
			continue
		}
		if _, ok := c.Upstreams[r.name]; !ok {
			return p.errf(r.node, "%sunknown upstream %q%s", r.ctx, r.name, suggest(r.name, mapKeys(c.Upstreams)))
		}
	}
	for _, r := range p.groupRef {
		if !c.hasGroup(r.name) {
			return p.errf(r.node, "%sunknown group %q%s", r.ctx, r.name, suggest(r.name, c.groupNames()))
		}
	}
	if err := p.checkAdmin(); err != nil {
		return err
	}
	return p.checkFailoverCycles()
}

func (p *cfgParser) checkCategory(r nameRef) error {
	c := p.cfg
	if IsBuiltin(r.name) {
		return nil
	}
	if srcs, ok := c.Categories[r.name]; ok {
		if len(srcs) > 0 {
			return nil
		}
		if categoryInDirs(c.CategoryDirs, r.name) == "" {
			return p.errf(r.node, "%scategory %q has no source", r.ctx, r.name)
		}
		return nil
	}
	if categoryInDirs(c.CategoryDirs, r.name) != "" {
		return nil
	}
	return p.errf(r.node, "%sunknown category %q%s", r.ctx, r.name, suggest(r.name, mapKeys(c.Categories)))
}

// categoryInDirs returns the folder of category name in dirs, or "".
func categoryInDirs(dirs []CategoryDir, name string) string {
	for _, d := range dirs {
		if len(d.Only) > 0 && !slices.Contains(d.Only, name) {
			continue
		}
		dir := filepath.Join(d.Path, name)
		if fi, err := os.Stat(dir); err == nil && fi.IsDir() {
			return dir
		}
	}
	return ""
}

func (p *cfgParser) checkFailoverCycles() error {
	ups := p.cfg.Upstreams
	const (
		unseen = iota
		active
		done
	)
	state := make(map[string]int, len(ups))
	var visit func(name string, path []string) error
	visit = func(name string, path []string) error {
		switch state[name] {
		case done:
			return nil
		case active:
			i := slices.Index(path, name)
			cycle := append(slices.Clone(path[i:]), name)
			first := ups[path[i]]
			return p.errf(&yaml.Node{Line: first.Line}, "upstream %q: failover cycle: %s", path[i], strings.Join(cycle, " -> "))
		}
		state[name] = active
		for _, m := range ups[name].Failover {
			if _, ok := ups[m]; !ok {
				continue
			}
			if err := visit(m, append(path, name)); err != nil {
				return err
			}
		}
		state[name] = done
		return nil
	}
	names := mapKeys(ups)
	for _, n := range names {
		if err := visit(n, nil); err != nil {
			return err
		}
	}
	return nil
}

func (p *cfgParser) fillDefaults() {
	c := p.cfg
	if len(c.Listen) == 0 {
		c.Listen = []string{DefaultListen}
	}
	if c.Default == "" {
		c.Default = Allow
	}
	if c.Sniff == "" {
		c.Sniff = SniffIP
	}
	if c.SniffUnnamed == "" {
		c.SniffUnnamed = Allow
	}
	if c.Transparent.Unnamed == "" {
		c.Transparent.Unnamed = Block
	}
	if !p.verifyHostSet {
		c.Transparent.VerifyHost = true
	}
	if !p.checkResolvedSet {
		c.CheckResolved = true
	}
	if c.Timeouts.Dial == 0 {
		c.Timeouts.Dial = DefaultDialTimeout
	}
	if c.Timeouts.Handshake == 0 {
		c.Timeouts.Handshake = DefaultHandshakeTimeout
	}
	if c.Timeouts.Idle == 0 {
		c.Timeouts.Idle = DefaultIdleTimeout
	}
	if c.CacheDir == "" && c.File != "" {
		c.CacheDir = filepath.Join(p.dir, "cache")
	}
	if c.Limits.MaxConns == 0 {
		c.Limits.MaxConns = DefaultMaxConns
	}
	if c.Limits.PerClient == 0 {
		c.Limits.PerClient = DefaultPerClient
	}
	if c.ShutdownGrace == 0 {
		c.ShutdownGrace = DefaultShutdownGrace
	}
	if c.PidFile == "" {
		c.PidFile = DefaultPidFile(c.File)
	}
}

// DefaultPidFile returns the pid file of a config whose `pid_file` is not
// set: NAME.pid beside the config file NAME.yaml, or "" (none) for the
// embedded default config.
func DefaultPidFile(configFile string) string {
	if configFile == "" {
		return ""
	}
	base := filepath.Base(configFile)
	return filepath.Join(filepath.Dir(configFile), strings.TrimSuffix(base, filepath.Ext(base))+".pid")
}

func mapKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// suggest returns ` (did you mean "x"?)` for the closest known name within
// two edits, or "".
func suggest(name string, known []string) string {
	best, bestD := "", 3
	for _, k := range known {
		if d := editDistance(name, k, bestD); d < bestD {
			best, bestD = k, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

// editDistance is the Levenshtein distance of a and b, or max when it is at least max.
func editDistance(a, b string, max int) int {
	if len(a)-len(b) >= max || len(b)-len(a) >= max || len(a) > 64 || len(b) > 64 {
		return max
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return min(prev[len(b)], max)
}
