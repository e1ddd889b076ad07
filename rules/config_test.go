package rules

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// dedent drops the tab indentation of YAML held in Go source.
func dedent(s string) string {
	s = strings.TrimPrefix(s, "\n")
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		if strings.TrimSpace(l) == "" {
			l = ""
		}
		lines[i] = strings.TrimPrefix(l, "\t\t")
	}
	return strings.Join(lines, "\n")
}

func TestParseFull(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "sluice.yaml")
	ut1 := filepath.Join(dir, "ut1")
	if err := os.MkdirAll(filepath.Join(ut1, "gambling"), 0o755); err != nil {
		t.Fatal(err)
	}
	src := dedent(`
		listen: 0.0.0.0:3128
		default: block
		hosts:
		  Intranet.Test.: 10.0.0.5
		  db.test: ["::1", "::ffff:127.0.0.2"]
		categories:
		  social: [lists/social.txt]
		  ads:
		    - https://example.org/hosts.txt
		    - {url: "https://example.net/list", refresh: 1h, format: Wildcard}
		    - {file: /srv/ads.txt, format: domains}
		category_dirs:
		  - path: ut1
		    only: [gambling]
		cache_dir: /var/cache/sluice
		clients: ["10.0.0.0/8", 192.168.1.1]
		users: users.htpasswd
		groups:
		  staff: [alice, bob]
		socks: {udp: true}
		upstreams:
		  tor: socks5h://127.0.0.1:9050
		  office: http://user:secret@parent.corp:3128
		  vpn: [https://edge.example:443, socks5://u:p@exit.example:1080]
		  pool: {failover: [office, tor]}
		  safe: {chain: [socks4a://127.0.0.1:1080], anonymize: true, tls_ca: ca.pem}
		upstream: office
		anonymize: true
		timeouts: {dial: 5s, idle: 1m, lifetime: 2h}
		rules:
		  - block: ["category:social", "*.tiktok.com"]
		    clients: ["10.1.0.0/16"]
		    ports: [80, 443, "8000-8100"]
		  - allow: .wikipedia.org
		    time: ["Mon-Fri 08:00-17:00", "Sat,Sun", "22:00-06:00"]
		    via: tor
		  - block: [10.0.0.0/8, category:gambling]
		    groups: [staff]
		    users: [carol]
		  - allow:
		    via: direct
		    name: Everything else
		limits: {max_conns: 100, per_client: 7}
		shutdown_grace: 5s
		pid_file: run/sluice.pid
	`)
	cfg, err := Parse(file, []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	yes := true
	want := &Config{
		File:    file,
		Listen:  []string{"0.0.0.0:3128"},
		Default: Block,
		Hosts: map[string][]netip.Addr{
			"intranet.test": {netip.MustParseAddr("10.0.0.5")},
			"db.test":       {netip.MustParseAddr("::1"), netip.MustParseAddr("127.0.0.2")},
		},
		Categories: map[string][]Source{
			"social": {{Path: filepath.Join(dir, "lists/social.txt"), Line: 7}},
			"ads": {
				{URL: "https://example.org/hosts.txt", Refresh: 24 * time.Hour, Line: 9},
				{URL: "https://example.net/list", Refresh: time.Hour, Format: FormatWildcard, Line: 10},
				{Path: "/srv/ads.txt", Format: FormatPlain, Line: 11},
			},
		},
		CategoryDirs: []CategoryDir{{Path: ut1, Only: []string{"gambling"}, Line: 13}},
		CacheDir:     "/var/cache/sluice",
		Clients:      []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.168.1.1/32")},
		Users:        filepath.Join(dir, "users.htpasswd"),
		UsersLine:    17,
		Groups:       map[string][]string{"staff": {"alice", "bob"}},
		Socks:        SocksConfig{UDP: true},
		Upstreams: map[string]Upstream{
			"tor":    {Name: "tor", Chain: []string{"socks5h://127.0.0.1:9050"}, Line: 22},
			"office": {Name: "office", Chain: []string{"http://user:secret@parent.corp:3128"}, Line: 23},
			"vpn":    {Name: "vpn", Chain: []string{"https://edge.example:443", "socks5://u:p@exit.example:1080"}, Line: 24},
			"pool":   {Name: "pool", Failover: []string{"office", "tor"}, Line: 25},
			"safe":   {Name: "safe", Chain: []string{"socks4a://127.0.0.1:1080"}, Anonymize: &yes, TLSCA: filepath.Join(dir, "ca.pem"), TLSCALine: 26, Line: 26},
		},
		Upstream:      "office",
		Anonymize:     true,
		Timeouts:      Timeouts{Dial: 5 * time.Second, Handshake: DefaultHandshakeTimeout, Idle: time.Minute, Lifetime: 2 * time.Hour},
		CheckResolved: true,
		Sniff:         SniffIP,
		SniffUnnamed:  Allow,
		Transparent:   Transparent{VerifyHost: true, Unnamed: Block},
		Limits:        Limits{MaxConns: 100, PerClient: 7},
		ShutdownGrace: 5 * time.Second,
		PidFile:       filepath.Join(dir, "run/sluice.pid"),
	}
	rulesGot := cfg.Rules
	cfg.Rules = nil
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("Parse:\n got %+v\nwant %+v", cfg, want)
	}

	mustPat := func(s string) Pattern {
		p, err := ParsePattern(s)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	tw := func(s string) TimeWindow {
		w, err := ParseTimeWindow(s)
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	wantRules := []Rule{
		{Index: 1, Line: 31, Action: Block,
			Text:    `block: [category:social, *.tiktok.com], clients: [10.1.0.0/16], ports: [80, 443, 8000-8100]`,
			Dests:   []Pattern{mustPat("category:social"), mustPat("*.tiktok.com")},
			Clients: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")},
			Ports:   []PortRange{{80, 80}, {443, 443}, {8000, 8100}}},
		{Index: 2, Line: 34, Action: Allow,
			Text:  `allow: .wikipedia.org, time: [Mon-Fri 08:00-17:00, "Sat,Sun", 22:00-06:00], via: tor`,
			Dests: []Pattern{mustPat(".wikipedia.org")},
			Times: []TimeWindow{tw("Mon-Fri 08:00-17:00"), tw("Sat,Sun"), tw("22:00-06:00")},
			Via:   "tor"},
		{Index: 3, Line: 37, Action: Block,
			Text:   `block: [10.0.0.0/8, category:gambling], groups: [staff], users: [carol]`,
			Dests:  []Pattern{mustPat("10.0.0.0/8"), mustPat("category:gambling")},
			Groups: []string{"staff"}, Users: []string{"carol"}},
		{Index: 4, Line: 40, Action: Allow, Text: `allow: [], via: direct`, Via: "direct", Name: "Everything else"},
	}
	if !reflect.DeepEqual(rulesGot, wantRules) {
		for i := range max(len(rulesGot), len(wantRules)) {
			var g, w Rule
			if i < len(rulesGot) {
				g = rulesGot[i]
			}
			if i < len(wantRules) {
				w = wantRules[i]
			}
			if !reflect.DeepEqual(g, w) {
				t.Errorf("rule %d:\n got %#v\nwant %#v", i+1, g, w)
			}
		}
	}
}

func TestParseDefaults(t *testing.T) {
	// A config that says nothing is refused: an empty file is what a
	// truncating save leaves behind, and it must not mean "allow all".
	for name, src := range map[string]string{"empty": "", "comments only": "# nothing\n", "null": "~\n",
		"only categories": "categories:\n  ads: [a.txt]\n"} {
		_, err := Parse("sluice.yaml", []byte(src))
		var pe *ParseError
		if !errors.As(err, &pe) || pe.File != "sluice.yaml" || !strings.Contains(err.Error(), "no `rules`, `default` or `listen` key") {
			t.Errorf("%s: err = %v, want a ParseError refusing an empty config", name, err)
		}
	}
	for name, src := range map[string]string{"default": "default: allow\n", "rules": "rules: []\n", "listen": "listen: 127.0.0.1:3128\n"} {
		cfg, err := Parse("sluice.yaml", []byte(src))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !reflect.DeepEqual(cfg.Listen, []string{DefaultListen}) || cfg.Default != Allow || len(cfg.Rules) != 0 ||
			cfg.Timeouts != (Timeouts{DefaultDialTimeout, DefaultHandshakeTimeout, DefaultIdleTimeout, 0}) ||
			cfg.Limits != (Limits{DefaultMaxConns, DefaultPerClient}) || cfg.ShutdownGrace != DefaultShutdownGrace ||
			cfg.Sniff != SniffIP || cfg.SniffUnnamed != Allow {
			t.Errorf("%s: defaults not filled: %+v", name, cfg)
		}
		if wd, _ := os.Getwd(); cfg.CacheDir != filepath.Join(wd, "cache") {
			t.Errorf("%s: CacheDir = %q", name, cfg.CacheDir)
		}
		if wd, _ := os.Getwd(); cfg.PidFile != filepath.Join(wd, "sluice.pid") {
			t.Errorf("%s: PidFile = %q, want sluice.pid beside the config", name, cfg.PidFile)
		}
	}
}

func TestParseSniff(t *testing.T) {
	for _, tc := range []struct {
		src     string
		mode    SniffMode
		unnamed Action
	}{
		{"default: allow\nsniff: all\nsniff_unnamed: block\n", SniffAll, Block},
		{"default: allow\nsniff: off\n", SniffOff, Allow},
		{"default: allow\nsniff: ip\nsniff_unnamed: allow\n", SniffIP, Allow},
		{"default: allow\nsniff_unnamed: block\n", SniffIP, Block},
	} {
		cfg, err := Parse("sluice.yaml", []byte(tc.src))
		if err != nil {
			t.Fatalf("%q: %v", tc.src, err)
		}
		if cfg.Sniff != tc.mode || cfg.SniffUnnamed != tc.unnamed {
			t.Errorf("%q: sniff %q, sniff_unnamed %q; want %q, %q", tc.src, cfg.Sniff, cfg.SniffUnnamed, tc.mode, tc.unnamed)
		}
	}
}

func TestDefault(t *testing.T) {
	cfg := Default()
	if cfg.File != "" || !reflect.DeepEqual(cfg.Listen, []string{"127.0.0.1:3128"}) || cfg.Default != Allow || len(cfg.Rules) != 0 {
		t.Errorf("Default() = %+v", cfg)
	}
	if !strings.Contains(string(DefaultYAML), "# ") {
		t.Error("DefaultYAML has no comments to guide the user")
	}
	set, err := LoadSet(cfg)
	if err != nil || len(set.Categories) != 0 {
		t.Errorf("LoadSet(Default()) = %+v, %v", set, err)
	}
}

func TestParseErrors(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "ut1", "adult"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "ut1", "porn"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	tests := []struct {
		name, src, want string
	}{
		{"syntax", "rules:\n  - block: [a\n", "sluice.yaml:2: did not find expected ',' or ']'"},
		// go-yaml names the start of the enclosing block (line 3, counted from 0): the line is the one that breaks it.
		{"syntax below its block", "default: allow\nlisten: [\"127.0.0.1:3128\"]\nrules:\n  - block: [a.example]\n    ports: [80]\n   - allow: [b.example]\n",
			"sluice.yaml:6: did not find expected '-' indicator"},
		// An uncommented list under "rules: []" (go-yaml: line 9 of 170): the key whose value is already given.
		{"value then block", "# Sluice\n\ndefault: allow\nrules: []\n#   - block: [a.example]\n  - block: [a.example]\n",
			`sluice.yaml:4: rules: [] ends here, so line 6, indented below it, belongs to nothing: delete "[]" to make the indented lines its value`},
		{"value then mapping", "default: allow\nhosts: {}\n  a.test: 10.0.0.1\n",
			`sluice.yaml:2: hosts: {} ends here, so line 3, indented below it, belongs to nothing: delete "{}" to make the indented lines its value`},
		{"tab", "listen:\n\t- x\n", "sluice.yaml:2: found character that cannot start any token"},
		{"unknown key", "listen: 127.0.0.1:3128\nlisten_addr: x\n", `sluice.yaml:2: unknown key "listen_addr"`},
		{"duplicate key", "default: allow\ndefault: block\n", `sluice.yaml:2: duplicate key "default" (first on line 1): keep one of the two`},
		{"duplicate nested", "hosts:\n  a.test: 1.2.3.4\n  a.test: 1.2.3.5\n", `sluice.yaml:3: hosts: duplicate key "a.test" (first on line 2): keep one of the two`},
		{"duplicate normalized host", "hosts:\n  a.test: 1.2.3.4\n  A.test.: 1.2.3.5\n", `sluice.yaml:3: hosts: duplicate host "a.test"`},
		{"not a mapping", "- a\n", "sluice.yaml:1: config must be a mapping"},
		{"two documents", "default: allow\n---\ndefault: block\n", "sluice.yaml:2: only one YAML document is allowed"},
		{"bad default", "default: deny\n", `sluice.yaml:1: default: must be allow or block, not "deny"`},
		{"bad listen", "listen: [127.0.0.1:3128, localhost]\n", `sluice.yaml:1: listen: invalid address "localhost" (want host:port, such as 127.0.0.1:3128)`},
		{"bad host ip", "hosts:\n  db.test: 1.2.3\n", `sluice.yaml:2: hosts: db.test: invalid IP address "1.2.3"`},
		{"unknown category", dedent(`
		categories:
		  social: [social.txt]
		rules:
		  - allow: [.example.com]
		  - block:
		      - category:social
		      - category:socail
		`), `sluice.yaml:7: rule 2: unknown category "socail" (did you mean "social"?)`},
		{"category without source", "categories:\n  social: []\nrules:\n  - block: category:social\n", `sluice.yaml:4: rule 1: category "social" has no source`},
		{"category from dir", "category_dirs: [ut1]\nrules:\n  - block: category:adult\n  - block: category:gambling\n", `sluice.yaml:4: rule 2: unknown category "gambling"`},
		{"category not in only", "category_dirs:\n  - {path: ut1, only: [porn]}\nrules:\n  - block: category:adult\n", `sluice.yaml:4: rule 1: unknown category "adult"`},
		{"only names no folder", "category_dirs:\n  - path: ut1\n    only: [adult, gamblnig]\nrules: []\n", `sluice.yaml:3: category_dirs: only: no category folder "gamblnig" in ` + filepath.Join(dir, "ut1")},
		{"unknown list format", "categories:\n  a: {file: a.txt, format: abp}\nrules: []\n", `sluice.yaml:2: categories: a: format: unknown list format "abp" (want adblock, hosts, domains, wildcard or dnsmasq)`},
		{"list format not a string", "categories:\n  a:\n    - file: a.txt\n      format: [adblock]\n", `sluice.yaml:4: categories: a: format: must be a string`},
		{"optional not a bool", "categories:\n  a: {file: a.txt, optional: maybe}\nrules: []\n", `sluice.yaml:2: categories: a: optional: must be true or false`},
		{"missing category dir", "category_dirs:\n  - path: nowhere\n", `sluice.yaml:2: category_dirs: ` + filepath.Join(dir, "nowhere") + ` is not a folder`},
		{"bad pattern", "rules:\n  - block: [\"exa mple.com\"]\n", `sluice.yaml:2: rule 1: invalid pattern "exa mple.com": not a host, glob, category or CIDR`},
		{"bad cidr", "rules:\n  - block: [10.0.0.0/33]\n", `sluice.yaml:2: rule 1: invalid CIDR "10.0.0.0/33"`},
		{"bad client", "rules:\n  - block: []\n    clients: [10.0.0.300]\n", `sluice.yaml:3: rule 1: clients: invalid IP address "10.0.0.300"`},
		{"bad top clients", "clients: [10.0.0.0/8, nope]\n", `sluice.yaml:1: clients: invalid IP address "nope"`},
		{"bad port", "rules:\n  - block: []\n    ports: [80, 70000]\n", `sluice.yaml:3: rule 1: ports: invalid port "70000" (want 1-65535 or a range such as 8000-8100)`},
		{"bad port range", "rules:\n  - block: []\n    ports: [\"9000-8000\"]\n", `sluice.yaml:3: rule 1: ports: invalid port "9000-8000" (want 1-65535 or a range such as 8000-8100)`},
		{"bad time", "rules:\n  - block: []\n    time: Mon-Fry\n", `sluice.yaml:3: rule 1: invalid time window "Mon-Fry": unknown day in "Mon-Fry" (want Mon, Tue, Wed, Thu, Fri, Sat, Sun)`},
		{"bad clock", "rules:\n  - block: []\n    time: \"08:00-25:00\"\n", `sluice.yaml:3: rule 1: invalid time window "08:00-25:00": times are HH:MM (or an hour, HH) from 00:00 to 24:00`},
		{"both actions", "rules:\n  - block: []\n    allow: []\n", `sluice.yaml:3: rule 1: both block and allow; a rule takes one`},
		{"no action", "rules:\n  - ports: [80]\n", `sluice.yaml:2: rule 1: needs block:, allow: or safesearch:`},
		{"safesearch unknown engine", "rules:\n  - safesearch: {gogle: strict}\n", `sluice.yaml:2: rule 1: safesearch: unknown engine "gogle" (want google, bing, duckduckgo, youtube)`},
		{"safesearch bad level", "rules:\n  - safesearch:\n      google: moderate\n", `sluice.yaml:3: rule 1: safesearch: google: unknown level "moderate" (want strict)`},
		{"safesearch youtube level", "rules:\n  - safesearch: {youtube: off}\n", `sluice.yaml:2: rule 1: safesearch: youtube: unknown level "off" (want moderate or strict)`},
		{"safesearch not mapping", "rules:\n  - safesearch: [google]\n", `sluice.yaml:2: rule 1: safesearch: must be a mapping of engine to level, such as {google: strict, youtube: moderate}`},
		{"safesearch empty", "rules:\n  - safesearch: {}\n", `sluice.yaml:2: rule 1: safesearch: names no engine (want google, bing, duckduckgo, youtube)`},
		{"safesearch with block", "rules:\n  - safesearch: {bing: strict}\n    block: [x.test]\n", `sluice.yaml:2: rule 1: safesearch: allows the engines' hosts itself; it takes no block: or allow:`},
		{"bad mode", "rules:\n  - block: [x.test]\n    mode: audit\n", `sluice.yaml:3: rule 1: mode: unknown mode "audit" (want enforce or report)`},
		{"report on allow", "rules:\n  - allow: [x.test]\n    mode: report\n", `sluice.yaml:2: rule 1: mode: report is for block rules (a rule with block:)`},
		{"unknown rule key", "rules:\n  - block: []\n    port: [80]\n", `sluice.yaml:3: rule 1: unknown key "port" (want block, allow or safesearch, name, mode, clients, ports, users, groups, time, via)`},
		{"empty rule name", "rules:\n  - block: []\n    name: \"\"\n", `sluice.yaml:3: rule 1: name: empty name`},
		{"rule name not a string", "rules:\n  - block: []\n    name: [a]\n", `sluice.yaml:3: rule 1: name: must be a string`},
		{"rule name with a newline", "rules:\n  - block: []\n    name: \"a\\nb\"\n", `sluice.yaml:3: rule 1: name: name "a\nb" has a control or invisible character`},
		{"rule name with spaces around", "rules:\n  - block: []\n    name: \" a\"\n", `sluice.yaml:3: rule 1: name: name " a" starts or ends with a space`},
		{"rule name too long", "rules:\n  - block: []\n    name: " + strings.Repeat("x", 81) + "\n", `sluice.yaml:3: rule 1: name: name longer than 80 bytes`},
		{"duplicate rule name", "rules:\n  - block: [a.test]\n    name: social\n  - block: [b.test]\n    name: social\n", `sluice.yaml:4: rule 2: name "social" is already the name of rule 1`},
		{"rule duplicate key", "rules:\n  - block: [a.com]\n    block: [b.com]\n", `sluice.yaml:3: rule 1: duplicate key "block" (first on line 2): keep one of the two`},
		{"rule not mapping", "rules:\n  - block\n", `sluice.yaml:2: rule 1: must be a mapping with block: or allow:`},
		{"unknown group", "groups: {staff: [a]}\nrules:\n  - block: []\n    groups: [stuff]\n", `sluice.yaml:4: rule 1: unknown group "stuff" (did you mean "staff"?)`},
		{"unknown via", "upstreams: {tor: socks5h://127.0.0.1:9050}\nrules:\n  - allow: []\n    via: toor\n", `sluice.yaml:4: rule 1: via: unknown upstream "toor" (did you mean "tor"?)`},
		{"unknown default route", "upstream: office\n", `sluice.yaml:1: upstream: unknown upstream "office"`},
		{"unknown failover member", "upstreams:\n  pool: {failover: [a]}\n", `sluice.yaml:2: upstream "pool": failover: unknown upstream "a"`},
		{"failover cycle", "upstreams:\n  a: {failover: [b]}\n  b: {failover: [c, a]}\n  c: http://127.0.0.1:3128\n", `sluice.yaml:2: upstream "a": failover cycle: a -> b -> a`},
		{"failover self", "upstreams:\n  a: {failover: [a]}\n", `sluice.yaml:2: upstream "a": failover cycle: a -> a`},
		{"bad scheme", "upstreams:\n  x: ftp://h:21\n", `sluice.yaml:2: upstream "x": hop 1: unsupported scheme "ftp" (want http, https, socks5, socks5h, socks4a)`},
		{"password not shown", "upstreams:\n  x: [http://h:1, \"socks5://u:hunter2@:1080\"]\n", `sluice.yaml:2: upstream "x": hop 2: missing host in "socks5://u:xxxxx@:1080"`},
		{"bad url", "upstreams:\n  x: \"http://[::1\"\n", `sluice.yaml:2: upstream "x": hop 1: invalid URL`},
		{"bad upstream port", "upstreams:\n  x: http://h:99999\n", `sluice.yaml:2: upstream "x": hop 1: invalid port in "http://h:99999"`},
		{"chain and failover", "upstreams:\n  a: http://h:1\n  x: {chain: [http://h:1], failover: [a]}\n", `sluice.yaml:3: upstream "x": needs exactly one of chain or failover`},
		{"upstream named direct", "upstreams:\n  direct: http://h:1\n", `sluice.yaml:2: upstreams: invalid name "direct"`},
		{"bad duration", "timeouts:\n  dial: 10\n", `sluice.yaml:2: timeouts: dial: invalid duration "10" (want a positive Go duration such as 30s, 5m, 24h)`},
		{"unknown timeout", "timeouts:\n  connect: 10s\n", `sluice.yaml:2: timeouts: unknown key "connect" (want dial, handshake, idle, lifetime)`},
		{"negative lifetime", "timeouts:\n  lifetime: -1s\n", `sluice.yaml:2: timeouts: lifetime: invalid duration "-1s" (want a positive Go duration such as 30s, 5m, 24h)`},
		{"bad limit", "limits:\n  max_conns: 0\n", `sluice.yaml:2: limits: max_conns: invalid count "0" (want a positive whole number such as 512)`},
		{"limit not a number", "limits: {per_client: many}\n", `sluice.yaml:1: limits: per_client: invalid count "many" (want a positive whole number such as 512)`},
		{"unknown limit", "limits:\n  conns: 5\n", `sluice.yaml:2: limits: unknown key "conns" (want max_conns, per_client)`},
		{"bad grace", "shutdown_grace: soon\n", `sluice.yaml:1: shutdown_grace: invalid duration "soon" (want a positive Go duration such as 30s, 5m, 24h)`},
		{"bad pid file", "pid_file: [a]\n", `sluice.yaml:1: pid_file: must be a string`},
		{"bad refresh", "categories:\n  ads:\n    - {url: https://x.test/l, refresh: daily}\n", `sluice.yaml:3: categories: ads: refresh: invalid duration "daily" (want a positive Go duration such as 30s, 5m, 24h)`},
		{"bad list url", "categories:\n  ads: [\"ftp://x.test/l\"]\n", `sluice.yaml:2: categories: ads: invalid list URL "ftp://x.test/l" (want http:// or https://)`},
		{"source with both", "categories:\n  ads:\n    - {url: https://x.test/l, file: a.txt}\n", `sluice.yaml:3: categories: ads: a source needs exactly one of file or url`},
		{"bad category name", "categories:\n  \"a b\": [x]\n", `sluice.yaml:2: categories: invalid category name "a b"`},
		{"bad bool", "anonymize: maybe\n", `sluice.yaml:1: anonymize: must be true or false`},
		{"bad check_resolved", "default: block\ncheck_resolved: \"no\"\n", `sluice.yaml:2: check_resolved: must be true or false`},
		{"bad deny_private", "deny_private: 1\n", `sluice.yaml:1: deny_private: must be true or false`},
		{"socks key", "socks: {tcp: true}\n", `sluice.yaml:1: socks: unknown key "tcp" (want udp)`},
		{"bad sniff", "default: allow\nsniff: always\n", `sluice.yaml:2: sniff: must be ip, all or off, not "always"`},
		{"sniff not a string", "sniff: [ip]\n", `sluice.yaml:1: sniff: must be a string`},
		{"sniff bool", "sniff: false\n", `sluice.yaml:1: sniff: must be ip, all or off, not "false"`},
		{"bad sniff_unnamed", "\nsniff_unnamed: deny\n", `sluice.yaml:2: sniff_unnamed: must be allow or block, not "deny"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse("sluice.yaml", []byte(tt.src))
			if err == nil {
				t.Fatalf("no error; config %+v", cfg)
			}
			var pe *ParseError
			if !errors.As(err, &pe) || pe.File != "sluice.yaml" {
				t.Errorf("error %v (%T) is not a *ParseError for sluice.yaml", err, err)
			}
			if err.Error() != tt.want {
				t.Errorf("error\n got %s\nwant %s", err, tt.want)
			}
		})
	}
}

// TestParseGuardKeys: check_resolved is on unless turned off, deny_private
// off unless turned on (issue 9 item 4).
func TestParseGuardKeys(t *testing.T) {
	for _, tt := range []struct {
		src           string
		check, denyPr bool
	}{
		{"", true, false},
		{"check_resolved: true\n", true, false},
		{"check_resolved: false\n", false, false},
		{"deny_private: true\n", true, true},
		{"check_resolved: false\ndeny_private: true\n", false, true},
	} {
		cfg, err := Parse("sluice.yaml", []byte(tt.src+"default: allow\n"))
		if err != nil {
			t.Fatalf("%q: %v", tt.src, err)
		}
		if cfg.CheckResolved != tt.check || cfg.DenyPrivate != tt.denyPr {
			t.Errorf("%q: check_resolved %v, deny_private %v; want %v, %v", tt.src, cfg.CheckResolved, cfg.DenyPrivate, tt.check, tt.denyPr)
		}
	}
	if d := Default(); !d.CheckResolved || d.DenyPrivate {
		t.Errorf("embedded default: check_resolved %v, deny_private %v", d.CheckResolved, d.DenyPrivate)
	}
}

func TestLoadConfig(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sluice.yaml")
	if err := os.WriteFile(path, []byte("categories:\n  social: [lists/social.txt]\ndefault: allow\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.File != path || cfg.Categories["social"][0].Path != filepath.Join(dir, "lists", "social.txt") || cfg.CacheDir != filepath.Join(dir, "cache") {
		t.Errorf("LoadConfig: %+v", cfg)
	}
	if _, err := LoadConfig(filepath.Join(dir, "missing.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

func TestParseTimeWindow(t *testing.T) {
	day := func(ds ...time.Weekday) uint8 {
		var b uint8
		for _, d := range ds {
			b |= 1 << d
		}
		return b
	}
	tests := []struct {
		in       string
		days     uint8
		from, to int
	}{
		{"Mon-Fri 08:00-17:00", day(1, 2, 3, 4, 5), 8 * 60, 17 * 60},
		{"Sat,Sun", day(6, 0), 0, 1440},
		{"22:00-06:00", 0, 22 * 60, 6 * 60},
		{"fri-mon", day(5, 6, 0, 1), 0, 1440},
		{"Monday,Wednesday 9:30-24:00", day(1, 3), 9*60 + 30, 1440},
		{"Mon 8-17", day(1), 8 * 60, 17 * 60},
	}
	for _, tt := range tests {
		w, err := ParseTimeWindow(tt.in)
		if err != nil || w.Days != tt.days || w.From != tt.from || w.To != tt.to || w.Text != tt.in {
			t.Errorf("ParseTimeWindow(%q) = %+v, %v; want days %08b %d-%d", tt.in, w, err, tt.days, tt.from, tt.to)
		}
	}
	for _, in := range []string{"", "Mon-Fri 08:00", "08:00-08:00", "Mo", "Mon 8-", "Mon 25-26", "08:00-17:00 Mon", "24:00-01:00", "1:2-3:04", "Mon Tue"} {
		if w, err := ParseTimeWindow(in); err == nil {
			t.Errorf("ParseTimeWindow(%q) = %+v, want an error", in, w)
		}
	}

	night, _ := ParseTimeWindow("Fri 22:00-06:00")
	at := func(d, h, m int) time.Time { return time.Date(2025, 6, d, h, m, 0, 0, time.UTC) } // 2025-06-06 is a Friday
	for _, tc := range []struct {
		t    time.Time
		want bool
	}{
		{at(6, 23, 0), true}, {at(7, 5, 59), true}, {at(7, 6, 0), false}, {at(6, 21, 59), false},
		{at(7, 23, 0), false}, {at(6, 5, 0), false},
	} {
		if got := night.Contains(tc.t); got != tc.want {
			t.Errorf("Fri 22:00-06:00 Contains(%v) = %v", tc.t, got)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"", string(DefaultYAML),
		"listen: [127.0.0.1:0]\nrules:\n  - block: [\"*.tiktok.com\", .example.com, 10.0.0.0/8]\n    ports: [80, \"8000-8100\"]\n",
		"upstreams:\n  a: {failover: [b]}\n  b: {failover: [a]}\n",
		"hosts: {a.test: [\"::1\", 127.0.0.1]}\ntimeouts: {dial: 1s}\n",
		"rules:\n  - allow: &x [a.com]\n  - block: *x\n",
		"rules: [{block: ~, time: \"Mon-Fri 08:00-17:00\"}]\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse("fuzz.yaml", data)
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("error %v is not a *ParseError", err)
			}
			return
		}
		if len(cfg.Listen) == 0 || cfg.Default == "" {
			t.Fatalf("defaults not filled: %+v", cfg)
		}
		for i, r := range cfg.Rules {
			if r.Index != i+1 || r.Text == "" || (r.Action != Allow && r.Action != Block) {
				t.Fatalf("rule %d: %+v", i+1, r)
			}
		}
	})
}
