package rules

import (
	"fmt"
	"html/template"
	"os"
	"path/filepath"
	"unicode"

	"go.yaml.in/yaml/v3"
)

// maxTemplateSize bounds a block page template file.
const maxTemplateSize = 1 << 20

// maxContact bounds the block page's contact line, in bytes.
const maxContact = 200

// parseBlockPage parses
//
//	block_page:
//	  contact: "helpdesk@school.example"
//	  template: page.html
//	  show_rule: false
//	  show_version: false
//
// The template is read and parsed here, so that a missing file or a syntax
// error fails the load (and keeps the running rules on reload) instead of
// a client's request.
func (p *cfgParser) parseBlockPage(n *yaml.Node) error {
	kvs, err := p.pairs(n, "block_page: ")
	if err != nil {
		return err
	}
	bp := &p.cfg.BlockPage
	for _, kv := range kvs {
		ctx := "block_page: " + kv.key.Value + ": "
		switch kv.key.Value {
		case "contact":
			if bp.Contact, err = p.str(kv.val, ctx); err != nil {
				return err
			}
			if err := checkContact(bp.Contact); err != nil {
				return p.errf(kv.val, "%s%v", ctx, err)
			}
		case "template":
			s, err := p.str(kv.val, ctx)
			if err != nil {
				return err
			}
			bp.TemplateFile = p.path(s)
			if bp.Template, err = readTemplate(bp.TemplateFile); err != nil {
				return p.errf(kv.val, "%s%v", ctx, err)
			}
		case "show_rule":
			if bp.ShowRule, err = p.boolean(kv.val, ctx); err != nil {
				return err
			}
		case "show_version":
			if bp.ShowVersion, err = p.boolean(kv.val, ctx); err != nil {
				return err
			}
		default:
			return p.errf(kv.key, "block_page: unknown key %q (want contact, template, show_rule, show_version)", kv.key.Value)
		}
	}
	return nil
}

// checkContact accepts a printable line of at most maxContact bytes.
func checkContact(s string) error {
	if s == "" || len(s) > maxContact {
		return fmt.Errorf("want a line of 1 to %d bytes, such as helpdesk@school.example", maxContact)
	}
	for _, r := range s {
		if !unicode.IsPrint(r) && r != ' ' {
			return fmt.Errorf("%q has a control or invisible character", s)
		}
	}
	return nil
}

// readTemplate reads and parses an html/template file. Its errors name the
// file, and a syntax error its line ("template: page.html:3: ...").
func readTemplate(file string) (*template.Template, error) {
	fi, err := os.Stat(file)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() || fi.Size() > maxTemplateSize {
		return nil, fmt.Errorf("%s: not a regular file of at most %d bytes", file, maxTemplateSize)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	t, err := template.New(filepath.Base(file)).Option("missingkey=error").Parse(string(data))
	if err != nil {
		return nil, fmt.Errorf("%s: %v", file, err)
	}
	return t, nil
}
