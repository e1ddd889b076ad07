package rules

// Parsing of hosts:, categories: (file, folder and URL sources) and
// category_dirs:.

import (
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"go.yaml.in/yaml/v3"
)

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
