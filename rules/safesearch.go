package rules

import (
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// SafeSearch enforcement without interception: a forward proxy resolves
// names itself, so for a search engine's hosts it connects to the engine's
// documented enforcement host instead (as DNS-based enforcement does with
// a CNAME), while the client's bytes, TLS server name and Host header
// included, stay as they are. The engines serve their restricted mode to
// every connection that reaches the enforcement host.

// The engines a `safesearch:` rule may name.
const (
	EngineGoogle     = "google"
	EngineBing       = "bing"
	EngineDuckDuckGo = "duckduckgo"
	EngineYouTube    = "youtube"
)

// The enforcement levels.
const (
	LevelStrict   = "strict"
	LevelModerate = "moderate"
)

// SafeSearchEngines lists the engines in the order documentation shows them.
var SafeSearchEngines = []string{EngineGoogle, EngineBing, EngineDuckDuckGo, EngineYouTube}

// safeSearchEnforce maps engine and level to the enforcement host.
var safeSearchEnforce = map[string]map[string]string{
	EngineGoogle:     {LevelStrict: "forcesafesearch.google.com"},
	EngineBing:       {LevelStrict: "strict.bing.com"},
	EngineDuckDuckGo: {LevelStrict: "safe.duckduckgo.com"},
	EngineYouTube:    {LevelStrict: "restrict.youtube.com", LevelModerate: "restrictmoderate.youtube.com"},
}

// googleTLDs are the suffixes of Google's search domains (Google's
// published list of supported domains): each serves search as google.TLD
// and www.google.TLD.
var googleTLDs = strings.Fields(`
com ad ae com.af com.ag al am co.ao com.ar as at com.au az ba com.bd be bf bg com.bh bi bj com.bn com.bo
com.br bs bt co.bw by com.bz ca cd cf cg ch ci co.ck cl cm cn com.co co.cr com.cu cv com.cy cz de dj dk dm
com.do dz com.ec ee com.eg es com.et fi com.fj fm fr ga ge gg com.gh com.gi gl gm gr com.gt gy com.hk hn hr
ht hu co.id ie co.il im co.in iq is it je com.jm jo co.jp co.ke com.kh ki kg co.kr com.kw kz la com.lb li lk
co.ls lt lu lv com.ly co.ma md me mg mk ml com.mm mn com.mt mu mv mw com.mx com.my co.mz com.na com.ng com.ni
ne nl no com.np nr nu co.nz com.om com.pa com.pe com.pg com.ph com.pk pl pn com.pr ps pt com.py com.qa ro ru
rw com.sa com.sb sc se com.sg sh si sk com.sl sn so sm sr st com.sv td tg co.th com.tj tl tm tn to com.tr tt
com.tw co.tz com.ua co.ug co.uk com.uy co.uz com.vc co.ve co.vi com.vn vu ws rs co.za co.zm co.zw cat
`)

// safeSearchHosts returns the hosts an engine's enforcement applies to,
// each matched exactly (not its subdomains: mail.google.com is no search).
func safeSearchHosts(engine string) []string {
	switch engine {
	case EngineGoogle:
		out := make([]string, 0, 2*len(googleTLDs))
		for _, t := range googleTLDs {
			out = append(out, "google."+t, "www.google."+t)
		}
		return out
	case EngineBing:
		return []string{"www.bing.com"}
	case EngineDuckDuckGo:
		return []string{"duckduckgo.com", "www.duckduckgo.com"}
	case EngineYouTube:
		return []string{"www.youtube.com", "m.youtube.com", "youtubei.googleapis.com",
			"youtube.googleapis.com", "www.youtube-nocookie.com"}
	}
	return nil
}

// SafeSearchHosts returns the hosts of engine whose connections a
// `safesearch:` rule sends to the enforcement host, and that host for
// level. ok is false for an unknown engine or a level it does not have.
func SafeSearchHosts(engine, level string) (hosts []string, enforce string, ok bool) {
	enforce, ok = safeSearchEnforce[engine][level]
	if !ok {
		return nil, "", false
	}
	return safeSearchHosts(engine), enforce, true
}

// safeSearchLevels describes the levels engine accepts, for errors.
func safeSearchLevels(engine string) string {
	var ls []string
	for l := range safeSearchEnforce[engine] {
		ls = append(ls, l)
	}
	slices.Sort(ls)
	return strings.Join(ls, " or ")
}

// parseSafeSearch fills r's destinations and enforcement hosts from a
// `safesearch:` mapping of engine to level.
func (p *cfgParser) parseSafeSearch(r *Rule, v *yaml.Node, ctx string) error {
	if v.Kind != yaml.MappingNode {
		return p.errf(v, "%smust be a mapping of engine to level, such as {google: strict, youtube: moderate}", ctx)
	}
	kvs, err := p.pairs(v, ctx)
	if err != nil {
		return err
	}
	if len(kvs) == 0 {
		return p.errf(v, "%snames no engine (want %s)", ctx, strings.Join(SafeSearchEngines, ", "))
	}
	r.Enforce = map[string]string{}
	for _, kv := range kvs {
		engine := kv.key.Value
		if _, known := safeSearchEnforce[engine]; !known {
			return p.errf(kv.key, "%sunknown engine %q (want %s)", ctx, engine, strings.Join(SafeSearchEngines, ", "))
		}
		level, err := p.str(kv.val, ctx+engine+": ")
		if err != nil {
			return err
		}
		hosts, enforce, ok := SafeSearchHosts(engine, level)
		if !ok {
			return p.errf(kv.val, "%s%s: unknown level %q (want %s)", ctx, engine, level, safeSearchLevels(engine))
		}
		for _, h := range hosts {
			r.Dests = append(r.Dests, Pattern{Kind: Exact, Text: h, Host: h})
			r.Enforce[h] = enforce
		}
	}
	return nil
}
