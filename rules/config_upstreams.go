package rules

// Parsing of upstreams: chains, failover lists, isolation, and their URLs.

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

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
