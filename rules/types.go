// Package rules holds Sluice's configuration as data: the YAML config,
// destination patterns, list files and their formats, and the host
// normalizer that every other package uses. It does no networking.
package rules

import (
	"html/template"
	"net/netip"
	"time"
)

// Action is what a rule does with a matching request.
type Action string

const (
	// Allow lets the request through.
	Allow Action = "allow"
	// Block refuses the request.
	Block Action = "block"
)

// Config is a parsed, validated configuration file. Every field states its
// default; the zero Config is the embedded default's shape without rules.
type Config struct {
	// File is the absolute path the config was read from, or "" for the
	// embedded default. Relative paths in the config resolve against its folder.
	File string `yaml:"-"`

	// Listen holds the addresses that accept clients. Every listener serves
	// HTTP, SOCKS5 and SOCKS4a on the same port.
	// Empty means ["127.0.0.1:3128"]: loopback only, so never open by accident.
	Listen []string `yaml:"listen"`

	// Default is the action when no rule matches. Empty means Allow.
	Default Action `yaml:"default"`

	// Hosts maps names to addresses for the direct dialer, like /etc/hosts.
	// Rules still see the name. Keys are normalized. Empty: system resolver only.
	Hosts map[string][]netip.Addr `yaml:"-"`

	// Categories maps a category name to its sources (files, folders, URLs).
	Categories map[string][]Source `yaml:"-"`

	// CategoryDirs are UT1/squidGuard-style folders: each sub-folder is a category.
	CategoryDirs []CategoryDir `yaml:"-"`

	// CacheDir holds downloaded remote lists. Empty means "cache" beside the config file.
	CacheDir string `yaml:"-"`

	// Rules are evaluated top to bottom; the first match wins.
	Rules []Rule `yaml:"-"`

	// Clients restricts who may use the proxy at all. Empty: anybody who can
	// reach a listener (serve refuses a non-loopback listener then, unless
	// users are configured or --allow-open is given).
	Clients []netip.Prefix `yaml:"-"`

	// Users is the path of an htpasswd file with bcrypt hashes. Empty: no authentication.
	Users string `yaml:"-"`
	// UsersLine is the config line of the users key, for errors about the file.
	UsersLine int `yaml:"-"`

	// Groups maps a group name to its member user names.
	Groups map[string][]string `yaml:"-"`

	// LDAP checks credentials against a directory (`auth: ldap:`), beside
	// Users. Nil: no directory.
	LDAP *LDAP `yaml:"-"`

	// Socks configures the SOCKS front end.
	Socks SocksConfig `yaml:"-"`

	// Upstreams names the upstream proxies and chains rules can route through.
	Upstreams map[string]Upstream `yaml:"-"`

	// Upstream is the default route for allowed traffic: an upstream name or
	// "direct". Empty means "direct".
	Upstream string `yaml:"-"`

	// Anonymize strips identifying headers (Via, X-Forwarded-For, Forwarded,
	// X-Real-IP, From, Proxy-*) from plain HTTP requests. Default false.
	Anonymize bool `yaml:"-"`

	// Timeouts bounds every wait.
	Timeouts Timeouts `yaml:"-"`

	// Sniff says which CONNECT and SOCKS tunnels have their first bytes
	// read for a name (TLS SNI, HTTP Host) that is decided again before
	// dialing. Empty means SniffIP.
	Sniff SniffMode `yaml:"-"`

	// Transparent configures the transparent gateway listeners.
	Transparent Transparent `yaml:"-"`

	// SniffUnnamed is the action for a sniffed tunnel to an IP literal
	// whose TLS ClientHello names no usable host (no server_name, Encrypted
	// Client Hello, malformed, too large, cut short). Empty means Allow.
	SniffUnnamed Action `yaml:"-"`

	// CheckResolved decides again, on the direct route, every address an
	// allowed name resolves to, as an IP-literal destination with the same
	// client, user, port and time: an address an IP or CIDR rule blocks is
	// never dialed. Parse sets it true unless `check_resolved: false`.
	CheckResolved bool `yaml:"-"`

	// DenyPrivate refuses, on the direct route, loopback, private,
	// link-local, CGNAT, unique-local and unspecified addresses after
	// resolution, unless a rule's destination list explicitly allows the
	// name or the address. Default false.
	DenyPrivate bool `yaml:"-"`

	// Admin is the admin listener (health, readiness, profiles). Zero: none.
	Admin Admin `yaml:"-"`

	// Limits bounds the client connections served at once.
	Limits Limits `yaml:"-"`

	// ShutdownGrace is how long connections in flight (requests, tunnels,
	// SOCKS) may run on after SIGTERM or SIGINT before they are closed.
	// Zero means 30s.
	ShutdownGrace time.Duration `yaml:"-"`

	// PidFile is written with the server's process id at start and removed
	// at exit; `sluice reload` reads it. Empty means NAME.pid beside the
	// config file NAME.yaml, and no pid file for the embedded default config.
	PidFile string `yaml:"-"`

	// BlockPage configures what a blocked client is shown.
	BlockPage BlockPage `yaml:"-"`

	// AccessLog is where access lines go: "stderr" (or empty: the default, with the
	// server's own messages) or a file path (created 0640, appended to,
	// reopened on SIGUSR1). The server's messages stay on stderr.
	AccessLog string `yaml:"-"`

	// AccessLogFlush is the longest an access line to a file waits in the
	// log's 64 KiB buffer before it is written (the buffer is also written
	// when full, on SIGUSR1, on reload and at a clean stop). A crash loses
	// at most this much of the log. Zero means 1s; AccessLogUnbuffered
	// (`off`) writes each line at once, one write(2) per line.
	AccessLogFlush time.Duration `yaml:"-"`

	// LogFormat is the access lines' format: "json" (or empty: the default) or
	// "squid" (Squid's native access.log format).
	LogFormat string `yaml:"-"`

	// PAC configures the proxy auto-config file (/proxy.pac, /wpad.dat).
	PAC PAC `yaml:"-"`
}

// BlockPage configures the page a blocked plain HTTP request gets (and the
// texts of other refusals). The zero BlockPage is the built-in page without
// a contact line and without the rule's patterns.
type BlockPage struct {
	// Contact is whom the page tells the client to ask, such as
	// "helpdesk@school.example". Empty: the page says "the administrator".
	Contact string
	// TemplateFile is the absolute path of an html/template file that
	// replaces the built-in page. Empty: the built-in page.
	TemplateFile string
	// Template is TemplateFile, read and parsed at load; nil when none.
	Template *template.Template
	// ShowRule shows clients the whole deciding rule (its patterns, its
	// conditions and its config line), for personal use. Default false:
	// clients see the rule's name or number only.
	ShowRule bool
	// ShowVersion puts Sluice's version on the block page. Default false:
	// no page or error body Sluice writes names its version, so a client
	// or a site probing through it cannot tell which build it is.
	ShowVersion bool
}

// SniffMode says which tunnels are sniffed.
type SniffMode string

const (
	// SniffIP sniffs tunnels whose destination is an IP literal.
	SniffIP SniffMode = "ip"
	// SniffAll sniffs every tunnel, so that a ClientHello naming another
	// host than the CONNECT (domain fronting) is decided too.
	SniffAll SniffMode = "all"
	// SniffOff sniffs nothing: names are those of the requests only.
	SniffOff SniffMode = "off"
)

// Limits bounds the client connections served at once. A connection beyond
// a limit is answered 503 (HTTP) or general failure (SOCKS) and closed.
type Limits struct {
	// MaxConns bounds the client connections open at once. Default 20000.
	MaxConns int
	// PerClient bounds the connections of one client IP. Default 512.
	PerClient int
}

// Defaults for Limits and ShutdownGrace.
const (
	DefaultMaxConns      = 20000
	DefaultPerClient     = 512
	DefaultShutdownGrace = 30 * time.Second
)

// Timeouts bounds the waits of a connection. Zero fields take the defaults.
type Timeouts struct {
	// Dial bounds one connection attempt to an origin or a hop. Default 10s.
	Dial time.Duration
	// Handshake bounds reading a request's headers or a SOCKS handshake. Default 30s.
	Handshake time.Duration
	// Idle closes a tunnel with no traffic either way for this long. Default 5m.
	Idle time.Duration
	// Lifetime closes a client connection (a tunnel, a SOCKS connection, a
	// keep-alive connection) this long after it was accepted, whatever it
	// is doing. Zero means unlimited.
	Lifetime time.Duration
}

// Defaults for Timeouts.
const (
	DefaultDialTimeout      = 10 * time.Second
	DefaultHandshakeTimeout = 30 * time.Second
	DefaultIdleTimeout      = 5 * time.Minute
)

// SocksConfig configures the SOCKS front end.
type SocksConfig struct {
	// UDP enables UDP ASSOCIATE. Default false.
	UDP bool
}

// Source is one origin of category entries: a file, a folder or a URL.
type Source struct {
	// Path is a file or folder, absolute after loading. Empty for a URL.
	Path string
	// URL is a remote list. Empty for a path.
	URL string
	// Refresh is how often a URL is fetched again. Zero means 24h.
	Refresh time.Duration
	// Format is the list format the source is read in (see ParseFormat):
	// FormatAdblock, FormatHosts, FormatPlain, FormatDnsmasq or
	// FormatWildcard. Empty: detected from each file (see DetectFormat).
	Format string
	// Optional lets a rule use the source while it is missing, unreadable
	// or empty: its category then lacks those entries, with a warning.
	// Default false: such a source is an error at start (see Set.SourceErrors).
	Optional bool
	// Line is the config line that declared the source.
	Line int
}

// CategoryDir is a UT1/squidGuard-style folder of categories.
type CategoryDir struct {
	// Path is the folder; each sub-folder with a "domains" file is a category.
	Path string
	// Only restricts the categories taken. Empty: all.
	Only []string
	// Line is the config line that declared the folder.
	Line int
}

// Upstream is a named route: a chain of proxies, or a failover pool of other
// upstream names.
type Upstream struct {
	// Name is the key in the upstreams map.
	Name string
	// Chain is the hops in order: client → Chain[0] → Chain[1] → … → origin.
	Chain []string
	// Failover lists other upstream names tried in order; the first healthy one is used.
	Failover []string
	// Anonymize overrides Config.Anonymize for this route when not nil.
	Anonymize *bool
	// TLSCA is a PEM file of CA certificates that verify https:// hops. Empty: system roots.
	TLSCA string
	// TLSCALine is the config line of the tls_ca key, for errors about the file.
	TLSCALine int
	// Isolate is the circuit isolation of the chain's last hop: "" or
	// "none", "client", "user" or "destination" (IsolationModes).
	Isolate string
	// Line is the config line that declared the upstream.
	Line int
}

// Rule is one entry of the rules list.
type Rule struct {
	// Index is the rule's position, counting from 1.
	Index int
	// Line is the config line where the rule starts.
	Line int
	// Name is the rule's optional name, shown to blocked clients instead of
	// its patterns ("social media"). Empty: clients see "rule N".
	Name string
	// Text is the rule's destination list as written, for people: `block: [".tiktok.com"]`.
	Text string
	// Action is Allow or Block.
	Action Action
	// Dests are the destination patterns. Empty matches every destination.
	Dests []Pattern
	// Clients restricts the rule to these client source prefixes. Empty: any client.
	Clients []netip.Prefix
	// Ports restricts the rule to these destination ports. Empty: any port.
	Ports []PortRange
	// Users restricts the rule to these authenticated users. Empty: anyone.
	Users []string
	// Groups restricts the rule to members of these groups. Empty: anyone.
	Groups []string
	// Times restricts the rule to these weekly windows. Empty: always.
	Times []TimeWindow
	// Via is the route for allowed traffic: an upstream name or "direct".
	// Empty means the default route (Config.Upstream).
	Via string
	// Enforce maps each destination host of a `safesearch:` rule (an Exact
	// pattern's Host) to the enforcement host dialed instead. Nil for
	// other rules.
	Enforce map[string]string
	// Report makes a block rule report-only (`mode: report`): a request
	// it would block is allowed, logged with would_block and counted.
	// Default false: the rule enforces.
	Report bool
}

// PortRange is an inclusive range of ports; a single port has Lo == Hi.
type PortRange struct{ Lo, Hi uint16 }

// Contains reports whether p lies in the range.
func (r PortRange) Contains(p uint16) bool { return r.Lo <= p && p <= r.Hi }

// TimeWindow is a weekly window in local time, such as "Mon-Fri 08:00-17:00".
type TimeWindow struct {
	// Days has bit d set for time.Weekday d. Zero means every day.
	Days uint8
	// From and To are minutes since midnight; To < From wraps past midnight.
	From, To int
	// Text is the window as written.
	Text string
}

// PatternKind tells how a destination pattern matches.
type PatternKind uint8

// The kinds of destination pattern.
const (
	// Exact matches one host name: "example.com".
	Exact PatternKind = iota + 1
	// Suffix matches a domain and every subdomain: ".example.com".
	Suffix
	// Glob matches a gobwas/glob pattern with '.' as separator: "*.example.com", "ads.**".
	Glob
	// Category matches every domain in a category, or a subdomain of one: "category:social".
	Category
	// CIDR matches an IP literal destination in a prefix: "10.0.0.0/8", "::1", "192.0.2.7".
	CIDR
)

// Pattern is one parsed destination pattern.
type Pattern struct {
	Kind PatternKind
	// Text is the pattern as written.
	Text string
	// Host is the normalized host for Exact and Suffix (without the leading dot),
	// the normalized glob for Glob, the category name for Category.
	Host string
	// Prefix is the network for CIDR; a single address is a /32 or /128.
	Prefix netip.Prefix
}
