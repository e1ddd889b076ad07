package rules

import (
	_ "embed"
	"errors"
	"fmt"
	"net"
	"net/netip"
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
		case "access_log_flush":
			err = p.parseAccessLogFlush(v, ctx)
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
