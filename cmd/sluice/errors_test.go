package main

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/spf13/cobra"
	"golang.org/x/crypto/bcrypt"
)

// runReport runs the CLI in-process as main does: it returns standard
// output, what reached standard error (the command's own lines, then
// report's), and the exit status.
func runReport(t *testing.T, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	root := newRoot()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetIn(strings.NewReader(stdin))
	root.SetArgs(args)
	code = report(&errOut, root.Execute())
	return out.String(), errOut.String(), code
}

// TestErrorStyleAndExitStatus is the table of every error path of the
// CLI: the exact standard error (or a pattern), and the exit status of the
// convention: 0 done, 1 nothing to do or a negative answer, 2 error.
func TestErrorStyleAndExitStatus(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	dir := writeFiles(t, map[string]string{
		"sluice.yaml": `default: allow
users: users.htpasswd
categories:
  ads: lists/ads.txt
category_dirs:
  - path: ut1
rules:
  - block: ["category:ads", "category:social_networks"]
`,
		"lists/ads.txt":               "listed.example\n",
		"ut1/social_networks/domains": "facebook.com\nexample.net\n",
		"users.htpasswd":              "alice:" + string(hash) + "\n",
		"bad.yaml":                    "default: allow\nrules:\n  - block: [\"[bad\"]\n",
		"nousers.yaml":                "default: allow\n",
		"remote.yaml":                 "default: allow\ncategories:\n  ads: {url: \"https://u:pw@lists.example/x.txt\"}\n",
		"warn.yaml": "default: allow\ncategories:\n  ads: [lists/ads.txt, {file: lists/missing.txt, optional: true}]\n  bad: lists/bad.txt\n" +
			"rules:\n  - block: [\"category:ads\"]\n",
		"lists/bad.txt": "good.example\nbad..host\n",
		"ldap.yaml":     "default: allow\nauth:\n  ldap:\n    url: ldap://127.0.0.1:1\n    base_dn: dc=example,dc=org\n",
		"bad.htpasswd":  "alice:" + string(hash) + "\nbob\n",
	})
	cfg := filepath.Join(dir, "sluice.yaml")
	users := filepath.Join(dir, "users.htpasswd")
	unknownCat := `sluice: unknown category "nosuch" (known: ads, social_networks)` + "\n"
	checkUsage := "usage: sluice check [--config FILE] [--client IP] [--user NAME] [--time T] [--no-resolve] TARGET\n"
	allowUsage := "usage: sluice allow DOMAIN --for DURATION [--client CIDR] [--user NAME] | --list | --remove DOMAIN\n"

	tests := []struct {
		name   string
		args   []string
		stdin  string
		code   int
		stderr string // exact, unless it starts with "~": a regexp then
		stdout string // a substring of standard output, when set
	}{
		// Wrong command lines: one line, then the usage line; exit 2.
		{"check without target", []string{"check"}, "", 2,
			"sluice: check needs 1 argument, got 0\n" + checkUsage, ""},
		{"check two targets", []string{"check", "a.example", "b.example"}, "", 2,
			"sluice: check needs 1 argument, got 2\n" + checkUsage, ""},
		{"check --client not an IP", []string{"check", "--client", "notanip", "a.example"}, "", 2,
			`sluice: --client: "notanip" is not an IP address` + "\n" + checkUsage, ""},
		{"check --time", []string{"check", "--time", "soon", "a.example"}, "", 2,
			`sluice: --time: "soon" is not a time (want "2006-01-02 15:04", local, or RFC 3339 such as 2006-01-02T15:04:05Z)` + "\n" + checkUsage, ""},
		{"check bad port", []string{"check", "a.example:99999"}, "", 2,
			`sluice: TARGET "a.example:99999": invalid port "99999" (want 1-65535)` + "\n" + checkUsage, ""},
		{"check bad host", []string{"check", "bad host!"}, "", 2,
			`sluice: TARGET "bad host!": invalid host name "bad host!"` + "\n" + checkUsage, ""},
		{"unknown flag", []string{"check", "--bogus", "a.example"}, "", 2,
			"sluice: unknown flag: --bogus\n" + checkUsage, ""},
		{"unknown command", []string{"bogus"}, "", 2,
			`sluice: unknown command "bogus" for "sluice" (see 'sluice --help')` + "\n", ""},
		{"unknown users command", []string{"users", "bogus"}, "", 2,
			`sluice: unknown command "bogus" for "sluice users" (see 'sluice users --help')` + "\nusage: sluice users [flags] COMMAND\n", ""},
		{"list with an argument", []string{"list", "bogus"}, "", 2,
			`sluice: list takes no arguments, got "bogus"` + "\nusage: sluice list [--config FILE]\n", ""},
		{"list add one argument", []string{"list", "-c", cfg, "add", "ads"}, "", 2,
			"sluice: list add needs at least 2 arguments, got 1\nusage: sluice list add [flags] CATEGORY DOMAIN...\n", ""},
		{"list update two", []string{"list", "update", "a", "b"}, "", 2,
			"sluice: list update takes at most 1 argument, got 2\nusage: sluice list update [flags] [CATEGORY]\n", ""},
		{"list add without config", []string{"list", "add", "ads", "a.example"}, "", 2,
			"sluice: --config FILE is needed to change lists\nusage: sluice list add [flags] CATEGORY DOMAIN...\n", ""},
		{"list test bad domain", []string{"list", "-c", cfg, "test", "bad host!"}, "", 2,
			`sluice: invalid host "bad host!"` + "\nusage: sluice list test [flags] DOMAIN|URL\n", ""},
		{"allow --for not a duration", []string{"allow", "-c", cfg, "a.example", "--for", "soon"}, "", 2,
			`sluice: --for: invalid value "soon" (want a duration such as 30m or 1h)` + "\n" + allowUsage, ""},
		{"allow --client", []string{"allow", "-c", cfg, "a.example", "--for", "1h", "--client", "bad"}, "", 2,
			`sluice: --client: "bad" is not an IP address or a CIDR such as 10.1.2.0/24` + "\n" + allowUsage, ""},
		{"allow two modes", []string{"allow", "-c", cfg, "--list", "--remove", "a.example"}, "", 2,
			"sluice: give one of: DOMAIN --for DURATION, --list, --remove DOMAIN\n" + allowUsage, ""},
		{"allow --for too long", []string{"allow", "-c", cfg, "a.example", "--for", "1000h"}, "", 2,
			"sluice: --for: want a duration such as 1h or 30m, at most 720h\n" + allowUsage, ""},
		{"reload names no server", []string{"reload"}, "", 2,
			"sluice: name the server: -c FILE (its config, whose pid_file is read) or --pid PID\nusage: sluice reload (-c FILE | --pid PID)\n", ""},
		{"reload --pid not a number", []string{"reload", "--pid", "abc"}, "", 2,
			`sluice: --pid: invalid value "abc" (want a whole number)` + "\nusage: sluice reload (-c FILE | --pid PID)\n", ""},
		{"man without folder", []string{"man"}, "", 2,
			"sluice: man needs 1 argument, got 0\nusage: sluice man DIR\n", ""},

		// Errors: one line, no package name, no Go syntax; exit 2.
		{"missing config", []string{"check", "-c", filepath.Join(dir, "nosuch.yaml"), "a.example"}, "", 2,
			"sluice: cannot open " + filepath.Join(dir, "nosuch.yaml") + ": no such file or directory\n", ""},
		{"validate missing config", []string{"config", "validate", "-c", filepath.Join(dir, "nosuch.yaml")}, "", 2,
			"sluice: cannot open " + filepath.Join(dir, "nosuch.yaml") + ": no such file or directory\n", ""},
		{"config error names file and line", []string{"check", "-c", filepath.Join(dir, "bad.yaml"), "a.example"}, "", 2,
			`~^sluice: ` + regexp.QuoteMeta(filepath.Join(dir, "bad.yaml")) + `:3: rule 1: invalid glob "\[bad"[^\n]*\n$`, ""},
		{"list show unknown category", []string{"list", "-c", cfg, "show", "nosuch"}, "", 2, unknownCat, ""},
		{"list update unknown category", []string{"list", "-c", cfg, "update", "nosuch"}, "", 2, unknownCat, ""},
		{"list rm unknown category", []string{"list", "-c", cfg, "rm", "nosuch", "a.example"}, "", 2, unknownCat, ""},
		{"list import missing file", []string{"list", "-c", cfg, "import", "ads", filepath.Join(dir, "nosuch.txt")}, "", 2,
			"sluice: cannot open " + filepath.Join(dir, "nosuch.txt") + ": no such file or directory\n", ""},
		{"users without file", []string{"users", "rm", "bob"}, "", 2,
			"sluice: give --config FILE (its users: entry names the file) or --file HTPASSWD\n", ""},
		{"users add in a missing folder", []string{"users", "-f", filepath.Join(dir, "nosuch", "users"), "add", "bob", "--password-stdin"}, "pw\n", 2,
			"sluice: cannot write " + filepath.Join(dir, "nosuch", "users") + ": no such file or directory\n", ""},
		{"users list skips a bad line", []string{"users", "-f", filepath.Join(dir, "bad.htpasswd"), "list"}, "", 0,
			"warning: " + filepath.Join(dir, "bad.htpasswd") + ":2: line is not user:hash\n", "alice\n"},
		{"users add empty password", []string{"users", "-c", cfg, "add", "bob", "--password-stdin"}, "\n", 2,
			"sluice: empty password; nothing changed\n", ""},

		// Nothing to do, or a negative answer: exit 1.
		{"list rm nothing listed", []string{"list", "-c", cfg, "rm", "ads", "nothere.example"}, "", 1,
			"", "  nothere.example: not listed in ads\nads: 0 removed\n"},
		{"list rm from a category folder", []string{"list", "-c", cfg, "rm", "social_networks", "facebook.com"}, "", 1,
			"", "  facebook.com: not removed: it comes from " + filepath.Join(dir, "ut1", "social_networks", "domains") + ":1, which sluice does not edit\n" +
				"social_networks: 0 removed\n" +
				"to allow facebook.com anyway: add a rule `- allow: [\".facebook.com\"]` (the domain and its subdomains) before the rule that blocks category:social_networks in " + cfg +
				", or run 'sluice allow -c " + cfg + " facebook.com --for 1h'\n"},
		{"list add listed already", []string{"list", "-c", cfg, "add", "ads", "LISTED.example"}, "", 1,
			"", "  listed.example (already listed)\nads: 0 added to "},
		{"list import a present source", []string{"list", "-c", cfg, "import", "ads", filepath.Join(dir, "lists", "ads.txt")}, "", 1,
			"", "is already a source\n"},
		{"list update without remote sources", []string{"list", "-c", cfg, "update"}, "", 1,
			"", "no remote sources: nothing to download\n"},
		{"list update of a folder category", []string{"list", "-c", cfg, "update", "social_networks"}, "", 1,
			"", "category social_networks has no remote sources: nothing to download\n"},
		{"list test in no category", []string{"list", "-c", cfg, "test", "fine.example"}, "", 1,
			"", "fine.example: in no category\n"},
		{"list test notes a list not downloaded", []string{"list", "-c", filepath.Join(dir, "remote.yaml"), "test", "fine.example"}, "", 1,
			"~^note: category ads: source https://u:xxxxx@lists.example/x.txt not searched: not downloaded yet \\(no cache file [^)]+\\)\n$", "fine.example: in no category\n"},
		{"list show --grep finds none", []string{"list", "-c", cfg, "show", "ads", "--grep", "zzz"}, "", 1, "", ""},
		{"users rm absent", []string{"users", "-c", cfg, "rm", "bob"}, "", 1,
			`sluice: no user "bob" in ` + users + ": nothing removed\n", ""},
		{"allow --remove absent", []string{"allow", "-c", cfg, "--remove", "a.example"}, "", 1,
			"sluice: no exception for a.example\n", ""},
		{"check blocked", []string{"check", "-c", cfg, "--no-resolve", "www.example.net"}, "", 1,
			"", "block www.example.net:443"},
		{"check --user unknown", []string{"check", "-c", cfg, "--no-resolve", "--user", "bob", "www.example.net"}, "", 1,
			"warning: --user bob: not a user in " + users + "; the rules are decided for this name anyway\n", "block www.example.net:443"},
		{"check --user without users file", []string{"check", "-c", filepath.Join(dir, "nousers.yaml"), "--no-resolve", "--user", "bob", "a.example"}, "", 0,
			"warning: --user bob: the config has no users: file, so no client can log in as this user\n", "allow a.example:443"},

		{"check --user with LDAP", []string{"check", "-c", filepath.Join(dir, "ldap.yaml"), "--no-resolve", "--user", "bob", "a.example"}, "", 0,
			"warning: --user bob: users are checked against LDAP, which check does not query: the user's directory groups are not shown, only the config's groups:\n", "allow a.example:443"},

		// Done: exit 0, nothing on standard error.
		{"validate warns once a line", []string{"config", "validate", "-c", filepath.Join(dir, "warn.yaml")}, "", 0, "",
			"warning: category ads: cannot open " + filepath.Join(dir, "lists", "missing.txt") + ": no such file or directory\n" +
				"warning: category bad: " + filepath.Join(dir, "lists", "bad.txt") + ":2: invalid domain \"bad..host\"\n"},
		{"list summary", []string{"list", "-c", cfg}, "", 0, "", "ads: 1 entry"},
		{"allow --list", []string{"allow", "-c", cfg, "--list"}, "", 0, "", "no temporary exceptions\n"},
		{"pac", []string{"pac", "-c", cfg, "--host", "proxy.example"}, "", 0, "", "PROXY proxy.example:3128"},
		{"pac of a missing config", []string{"pac", "-c", filepath.Join(dir, "nosuch.yaml")}, "", 2,
			"sluice: cannot open " + filepath.Join(dir, "nosuch.yaml") + ": no such file or directory\n", ""},
		{"version", []string{"version"}, "", 0, "", "sluice "},
		{"config default", []string{"config", "default"}, "", 0, "", "127.0.0.1:3128"},
		{"check --user known", []string{"check", "-c", cfg, "--no-resolve", "--user", "alice", "a.example"}, "", 0, "", "allow a.example:443"},
		{"list rm removes", []string{"list", "-c", cfg, "rm", "ads", "listed.example"}, "", 0, "", "ads: 1 removed\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, stderr, code := runReport(t, tt.stdin, tt.args...)
			if code != tt.code {
				t.Errorf("exit status %d, want %d\nstderr: %s\nstdout: %s", code, tt.code, stderr, stdout)
			}
			if rx, ok := strings.CutPrefix(tt.stderr, "~"); ok {
				if !regexp.MustCompile(rx).MatchString(stderr) {
					t.Errorf("stderr %q does not match %q", stderr, rx)
				}
			} else if stderr != tt.stderr {
				t.Errorf("stderr:\n%q\nwant:\n%q", stderr, tt.stderr)
			}
			if !strings.Contains(stdout, tt.stdout) {
				t.Errorf("stdout lacks %q:\n%s", tt.stdout, stdout)
			}
			// The one style: "sluice: " at most once a line, no package name,
			// on standard error and in the warnings and errors of stdout.
			lines := strings.Split(stderr, "\n")
			for _, l := range strings.Split(stdout, "\n") {
				if strings.HasPrefix(l, "warning: ") || strings.HasPrefix(l, "error: ") || strings.Contains(l, "not removed") {
					lines = append(lines, l)
				}
			}
			for _, line := range lines {
				if strings.Count(line, "sluice: ") > 1 {
					t.Errorf("repeated prefix: %q", line)
				}
				if m := goSyntax.FindString(line); m != "" {
					t.Errorf("stderr line shows %q: %q", m, line)
				}
			}
		})
	}
}

// goSyntax finds our package names and Go's syntax in a message.
var goSyntax = regexp.MustCompile(`(^|: )(rules|server|dial|auth|socks|proxy|filter): |ParseAddr\(|parsing time|listen tcp|bind: `)

// TestDescribe renders Go's error chains once, in the user's words.
func TestDescribe(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, busy := net.Listen("tcp", ln.Addr().String())
	_, missing := os.Open("/nonexistent/sluice.yaml")
	tests := []struct {
		err  error
		want string
	}{
		{fmt.Errorf("server: listen %s: %w", ln.Addr(), busy),
			"cannot listen on " + ln.Addr().String() + ": address already in use (is another sluice running?)"},
		{fmt.Errorf("rules: read config: %w", missing), "cannot open /nonexistent/sluice.yaml: no such file or directory"},
		{fmt.Errorf("rules: exceptions %s: %w", "/x/exceptions.json", &fs.PathError{Op: "write", Path: "/x/exceptions.json", Err: syscall.EACCES}),
			"cannot write /x/exceptions.json: permission denied"},
		{errors.New("rules: sluice.yaml:4: rule 2: rules: invalid glob \"[\""), "sluice.yaml:4: rule 2: invalid glob \"[\""},
		// Right after FILE:LINE, "auth" and "rules" are config keys.
		{errors.New("sluice.yaml:3: auth: ldap: tls_ca: no PEM certificate found"), "sluice.yaml:3: auth: ldap: tls_ca: no PEM certificate found"},
		{errors.New("users.htpasswd:6: user plain: auth: unsupported hash kind"), "users.htpasswd:6: user plain: unsupported hash kind"},
		// A segment that says more than the step keeps the file.
		{fmt.Errorf("category bad: source /l/bad.txt is unusable: %w", &fs.PathError{Op: "read", Path: "/l/bad.txt", Err: syscall.EIO}),
			"category bad: source /l/bad.txt is unusable: cannot read /l/bad.txt: input/output error"},
		{fmt.Errorf("category ads: %w", errors.New("rules: lists/ads.txt: empty")), "category ads: lists/ads.txt: empty"},
		{errors.New("server: admin: cannot listen on 127.0.0.1:9: permission denied"), "admin: cannot listen on 127.0.0.1:9: permission denied"},
		{fmt.Errorf("server: resolve: %w", &net.DNSError{Err: "no such host", Name: "nosuch.test", Server: "10.0.0.53:53", IsNotFound: true}),
			"resolve: cannot resolve nosuch.test: no such host"},
		{&net.OpError{Op: "dial", Net: "tcp", Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9}, Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)},
			"cannot connect to 127.0.0.1:9: connection refused"},
		{errors.New("rules"), "rules"}, // a last segment is a message, kept
		// net/http's `Get "URL": ` reads as `URL: `, said once.
		{fmt.Errorf("server: fetch: %w", &url.Error{Op: "Get", URL: "https://l.example/x", Err: errors.New("dial l.example:443: dns: no such host")}),
			"https://l.example/x: dial l.example:443: dns: no such host"},
	}
	for _, tt := range tests {
		if got := describe(tt.err); got != tt.want {
			t.Errorf("describe(%q)\n got %q\nwant %q", tt.err, got, tt.want)
		}
	}
}

// TestEveryCommandHasExampleAndUsage: the help of each command shows an
// example, and its arguments are checked by the one style's validators.
func TestEveryCommandHasExampleAndUsage(t *testing.T) {
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			walk(sub)
		}
		if c.Name() == "help" || c.Name() == "completion" || c.HasParent() && c.Parent().Name() == "completion" {
			return // cobra's own
		}
		if c.Example == "" {
			t.Errorf("%s has no Example", c.CommandPath())
		}
		if c.Long == "" && c.HasParent() {
			t.Errorf("%s has no Long help", c.CommandPath())
		}
	}
	walk(newRoot())
}

// TestLogErrorsDescribed: an error in a log line reads as the CLI says it,
// without our packages' names or Go's repetitions.
func TestLogErrorsDescribed(t *testing.T) {
	var buf strings.Builder
	log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{ReplaceAttr: describeErrors}))
	log.Warn("x", "err", fmt.Errorf("rules: %w", errors.New("https://l.example/x: not downloaded yet")), "n", 3)
	want := `"err":"https://l.example/x: not downloaded yet","n":3`
	if !strings.Contains(buf.String(), want) {
		t.Errorf("log line %s\nwant it to contain %s", buf.String(), want)
	}
}
