// Package filtertest generates large synthetic rule sets and request hosts
// for benchmarks and load tests of the filter engine. The output depends
// only on the options, so runs are comparable; nothing is written to disk.
package filtertest

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/sluiceproxy/sluice/rules"
)

// Options sizes a synthetic rule set.
type Options struct {
	// Seed makes the set; the same options give the same set.
	Seed uint64
	// Domains is the number of category domains, spread over Categories.
	Domains int
	// Categories is the number of categories; 0 means 1.
	Categories int
	// Globs is the number of glob patterns, spread over ten block rules.
	// A few of them (about one in a thousand, at least one when Globs > 0)
	// have no literal suffix ("ads-7.*").
	Globs int
}

// tlds are the top-level labels names are made with.
var tlds = []string{"com", "net", "org", "de", "fr", "io", "co.uk", "info", "ru", "nl"}

// label returns a random label of 5 to 12 lower-case letters and digits.
func label(r *rand.Rand) string {
	const chars = "abcdefghijklmnopqrstuvwxyz0123456789"
	var b [12]byte
	n := 5 + r.IntN(8)
	for i := range n {
		b[i] = chars[r.IntN(26)] // a letter first
		if i > 0 {
			b[i] = chars[r.IntN(len(chars))]
		}
	}
	return string(b[:n])
}

// domain returns a random registrable domain, sometimes with a subdomain.
func domain(r *rand.Rand) string {
	d := label(r) + "." + tlds[r.IntN(len(tlds))]
	if r.IntN(4) == 0 {
		d = label(r) + "." + d
	}
	return d
}

// CategoryName returns the name of synthetic category i: "cat07".
func CategoryName(i int) string {
	s := strconv.Itoa(i)
	if len(s) < 2 {
		s = "0" + s
	}
	return "cat" + s
}

// Set returns a rule set with o.Domains category domains in o.Categories
// categories (two exceptions each), and these rules, in order:
//
//  1. allow .intranet.example for clients in 10.0.0.0/8, via "office"
//  2. one rule per category: the first tenth allow, the others block
//  3. ten block rules sharing o.Globs globs
//  4. block 192.168.0.0/16 and fd00::/8
//
// The default is allow.
func Set(o Options) *rules.Set {
	r := rand.New(rand.NewPCG(o.Seed, o.Seed^0x9e3779b97f4a7c15))
	ncat := max(o.Categories, 1)
	cfg := &rules.Config{File: "synthetic.yaml", Default: rules.Allow}
	set := &rules.Set{Config: cfg, Categories: make(map[string]*rules.CategoryList, ncat)}
	lists := make([]*rules.CategoryList, ncat)
	for i := range lists {
		lists[i] = &rules.CategoryList{Name: CategoryName(i), Block: make([]string, 0, o.Domains/ncat+1)}
		set.Categories[lists[i].Name] = lists[i]
	}
	for range o.Domains {
		l := lists[r.IntN(ncat)]
		l.Block = append(l.Block, domain(r))
	}
	for _, l := range lists {
		if len(l.Block) > 0 {
			l.Allow = append(l.Allow, "ok."+l.Block[0], "fine."+l.Block[len(l.Block)/2])
		}
	}

	line := 1
	add := func(action rules.Action, text string, dests ...rules.Pattern) *rules.Rule {
		cfg.Rules = append(cfg.Rules, rules.Rule{
			Index: len(cfg.Rules) + 1, Line: line, Text: text, Action: action, Dests: dests,
		})
		line += 2
		return &cfg.Rules[len(cfg.Rules)-1]
	}
	rl := add(rules.Allow, `allow: [".intranet.example"]`,
		rules.Pattern{Kind: rules.Suffix, Text: ".intranet.example", Host: "intranet.example"})
	rl.Clients = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	rl.Via = "office"
	for i, l := range lists {
		action := rules.Block
		if i < ncat/10 {
			action = rules.Allow
		}
		p := rules.Pattern{Kind: rules.Category, Text: rules.CategoryPrefix + l.Name, Host: l.Name}
		add(action, string(action)+`: ["`+p.Text+`"]`, p)
	}
	if o.Globs > 0 {
		loose := max(o.Globs/1000, 1)
		var globs []rules.Pattern
		for i := range o.Globs {
			var g string
			switch {
			case i < loose:
				g = "ads-" + strconv.Itoa(i) + ".*"
			default:
				base := label(r) + "." + tlds[r.IntN(len(tlds))]
				switch i % 4 {
				case 0:
					g = "*." + base
				case 1:
					g = "ads*." + base
				case 2:
					g = "**." + base
				default:
					g = "t?." + label(r) + "." + base
				}
			}
			globs = append(globs, rules.Pattern{Kind: rules.Glob, Text: g, Host: g})
		}
		per := (len(globs) + 9) / 10
		for c := range slices.Chunk(globs, per) {
			add(rules.Block, "block: [globs]", c...)
		}
	}
	add(rules.Block, `block: ["192.168.0.0/16", "fd00::/8"]`,
		rules.Pattern{Kind: rules.CIDR, Text: "192.168.0.0/16", Prefix: netip.MustParsePrefix("192.168.0.0/16")},
		rules.Pattern{Kind: rules.CIDR, Text: "fd00::/8", Prefix: netip.MustParsePrefix("fd00::/8")})
	return set
}

// Hosts returns n request hosts for set, a demanding mix: about 40% listed
// domains or their subdomains, 40% names in no list, 15% names that a glob
// matches, 5% IP literals. The output depends only on set, n and seed.
func Hosts(set *rules.Set, n int, seed uint64) []string {
	r := rand.New(rand.NewPCG(seed, seed^0x6a09e667f3bcc908))
	return hosts(set, n, r, mix{listed: 40, glob: 15, ip: 5})
}

// GatewayHosts returns n request hosts for set in the mix a gateway mostly
// sees, where most requests are allowed: about 4% listed domains or their
// subdomains, 1% names that a glob matches, and 95% names in no list, made
// like the listed ones (random labels under the same top-level labels,
// sometimes with a subdomain). The output depends only on set, n and seed.
func GatewayHosts(set *rules.Set, n int, seed uint64) []string {
	r := rand.New(rand.NewPCG(seed, seed^0xbb67ae8584caa73b))
	return hosts(set, n, r, mix{listed: 4, glob: 1})
}

// mix gives the percentages of each kind of host; the rest are names in
// no list.
type mix struct{ listed, glob, ip int }

func hosts(set *rules.Set, n int, r *rand.Rand, m mix) []string {
	var names []string
	for name := range set.Categories {
		names = append(names, name)
	}
	slices.Sort(names)
	var globs []string
	for _, rl := range set.Config.Rules {
		for _, p := range rl.Dests {
			if p.Kind == rules.Glob {
				globs = append(globs, p.Host)
			}
		}
	}
	subs := []string{"", "", "www.", "cdn.", "img.static.", "a.b.c."}
	out := make([]string, 0, n)
	for range n {
		k := r.IntN(100)
		var h string
		switch {
		case k < m.listed && len(names) > 0:
			l := set.Categories[names[r.IntN(len(names))]]
			if len(l.Block) == 0 {
				h = domain(r)
				break
			}
			h = subs[r.IntN(len(subs))] + l.Block[r.IntN(len(l.Block))]
		case k < m.listed+m.glob && len(globs) > 0:
			g := globs[r.IntN(len(globs))]
			g = strings.ReplaceAll(g, "**", "x.y")
			g = strings.ReplaceAll(g, "*", "www")
			h = strings.ReplaceAll(g, "?", "q")
		case k < m.listed+m.glob+m.ip:
			h = netip.AddrFrom4([4]byte{192, 168, byte(r.IntN(256)), byte(r.IntN(256))}).String()
			if r.IntN(2) == 0 {
				h = netip.AddrFrom4([4]byte{93, 184, byte(r.IntN(256)), byte(r.IntN(256))}).String()
			}
		default:
			h = subs[r.IntN(len(subs))] + domain(r)
		}
		out = append(out, h)
	}
	return out
}
