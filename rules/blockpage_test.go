package rules

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseBlockPage(t *testing.T) {
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "sluice.yaml")
	os.WriteFile(filepath.Join(dir, "page.html"), []byte("<p>{{.Host}} blocked</p>\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "broken.html"), []byte("<p>\n{{.Host</p>\n"), 0o644)

	cfg, err := Parse(cfgFile, []byte("default: allow\n"))
	if err != nil || cfg.BlockPage.Contact != "" || cfg.BlockPage.Template != nil || cfg.BlockPage.ShowRule {
		t.Fatalf("default block page: %+v, %v", cfg.BlockPage, err)
	}
	cfg, err = Parse(cfgFile, []byte("block_page:\n  contact: \"helpdesk@school.example\"\n  template: page.html\n  show_rule: true\ndefault: allow\n"))
	if err != nil {
		t.Fatal(err)
	}
	bp := cfg.BlockPage
	if bp.Contact != "helpdesk@school.example" || !bp.ShowRule || bp.TemplateFile != filepath.Join(dir, "page.html") || bp.Template == nil {
		t.Fatalf("block_page: %+v", bp)
	}
	var b strings.Builder
	if err := bp.Template.Execute(&b, map[string]string{"Host": "<x>"}); err != nil || b.String() != "<p>&lt;x&gt; blocked</p>\n" {
		t.Errorf("template: %q, %v (want the host escaped)", b.String(), err)
	}

	for _, c := range []struct{ name, src, want string }{
		{"unknown key", "block_page:\n  contakt: x\n", `sluice.yaml:2: block_page: unknown key "contakt" (want contact, template, show_rule, show_version)`},
		{"not a mapping", "block_page: yes\n", `sluice.yaml:1: block_page: must be a mapping`},
		{"empty contact", "block_page: {contact: \"\"}\n", `sluice.yaml:1: block_page: contact: want a line of 1 to 200 bytes`},
		{"contact with newline", "block_page:\n  contact: \"a\\nb\"\n", `sluice.yaml:2: block_page: contact: "a\nb" has a control or invisible character`},
		{"show_rule not a bool", "block_page:\n  show_rule: maybe\n", `sluice.yaml:2: block_page: show_rule: must be true or false`},
		{"missing template", "block_page:\n  template: nowhere.html\n", `sluice.yaml:2: block_page: template: stat ` + filepath.Join(dir, "nowhere.html") + `: no such file or directory`},
		{"template is a folder", "block_page:\n  template: .\n", `sluice.yaml:2: block_page: template: ` + dir + `: not a regular file`},
		{"template syntax", "block_page:\n  template: broken.html\n", `sluice.yaml:2: block_page: template: ` + filepath.Join(dir, "broken.html") + `: template: broken.html:2: `},
	} {
		_, err := Parse(cfgFile, []byte(c.src))
		if err == nil || !strings.HasPrefix(err.Error(), cfgFile+strings.TrimPrefix(c.want, "sluice.yaml")) {
			t.Errorf("%s: got %v\nwant prefix %s", c.name, err, c.want)
		}
	}
}
