package main

import (
	"path/filepath"
	"strings"
	"testing"
)

// complete runs cobra's hidden `__complete` request, as the shell scripts
// of `sluice completion` do, and returns the offered words and the
// directive line.
func complete(t *testing.T, args ...string) ([]string, string) {
	t.Helper()
	out, err := run(t, nil, append([]string{"__complete"}, args...)...)
	if err != nil {
		t.Fatalf("__complete %q: %v", args, err)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	return lines[:len(lines)-1], lines[len(lines)-1]
}

// TestCompleteCategories: the category argument of list show, add, rm,
// import and update is completed with the config's categories, those of
// category_dirs (a folder with a domains file, within only:) included;
// nothing is offered where a domain is expected.
func TestCompleteCategories(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"sluice.yaml": "default: allow\ncategories:\n  social: [lists/social.txt]\n  sports: lists/sports.txt\n  ads: [lists/ads.txt]\n" +
			"category_dirs:\n  - path: ut1\n    only: [gambling]\n",
		"lists/social.txt":     "a.test\n",
		"lists/sports.txt":     "b.test\n",
		"lists/ads.txt":        "c.test\n",
		"ut1/gambling/domains": "d.test\n",
		"ut1/adult/domains":    "e.test\n",   // not in only:
		"ut1/shopping/urls":    "f.test/x\n", // not in only: either
		"ut1/.hidden/domains":  "g.test\n",
	})
	cfg := filepath.Join(dir, "sluice.yaml")
	all := "ads gambling social sports"
	for _, sub := range []string{"show", "add", "rm", "import", "update"} {
		got, dir := complete(t, "list", "-c", cfg, sub, "")
		if strings.Join(got, " ") != all || dir != ":4" {
			t.Errorf("list %s: %q %s, want %s and :4 (no files)", sub, got, dir, all)
		}
	}
	if got, _ := complete(t, "list", "show", "--config", cfg, "s"); strings.Join(got, " ") != "social sports" {
		t.Errorf("prefix s: %q", got)
	}
	if got, dir := complete(t, "list", "-c", cfg, "add", "social", ""); len(got) != 0 || dir != ":4" {
		t.Errorf("domain argument of add: %q %s, want nothing", got, dir)
	}
	if got, dir := complete(t, "list", "-c", cfg, "import", "social", ""); len(got) != 0 || dir != ":0" {
		t.Errorf("file argument of import: %q %s, want the shell's file names (:0)", got, dir)
	}
	if got, _ := complete(t, "list", "-c", filepath.Join(dir, "missing.yaml"), "show", ""); len(got) != 0 {
		t.Errorf("missing config: %q", got)
	}
}

// TestCompleteUsers: the NAME of users rm and users add is completed with
// the users of the config's htpasswd file or of --file, every hash kind.
func TestCompleteUsers(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"sluice.yaml": "default: allow\nusers: users.htpasswd\n",
		// bcrypt, apr1, SHA-1, crypt DES; a plain line is skipped.
		"users.htpasswd": "# staff\nalice:$2y$05$.yGVS9ETNxGB9ULjXdkJhe//eEIjnkkablNFXRMyfOWy8P2u4J84C\n" +
			"albert:$apr1$Q5VSmT0U$c5i3C4Z8gq3m9cYT7kw5A/\nbob:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n" +
			"carol:abbIw0V4oaGvc\nplain:secret\n",
	})
	cfg := filepath.Join(dir, "sluice.yaml")
	for _, sub := range []string{"rm", "add"} {
		got, d := complete(t, "users", "-c", cfg, sub, "")
		if strings.Join(got, " ") != "alice albert bob carol" || d != ":4" {
			t.Errorf("users %s: %q %s", sub, got, d)
		}
	}
	if got, _ := complete(t, "users", "rm", "--file", filepath.Join(dir, "users.htpasswd"), "al"); strings.Join(got, " ") != "alice albert" {
		t.Errorf("prefix al with --file: %q", got)
	}
	if got, _ := complete(t, "users", "-c", cfg, "rm", "alice", ""); len(got) != 0 {
		t.Errorf("second argument: %q", got)
	}
	if got, _ := complete(t, "users", "rm", ""); len(got) != 0 {
		t.Errorf("no config and no --file: %q", got)
	}
}
