package test

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// The README is the user's manual, and these tests run it: every whole
// config in a ```yaml block validates, and every `sluice` command of a
// ```sh, ```shell or ```console block runs against the files of examples/
// and prints what the README shows after it. A README change that breaks an
// example fails here with its README line.
//
// Marks, an HTML comment on the line before a fence:
//
//	<!-- not a whole config -->  a yaml block that is a fragment; it must not validate on its own
//	<!-- not run: REASON -->     a command block that needs a running server, root or the network,
//	                             or a config that names files outside the repository
//	<!-- file: PATH -->          the block is the repository's file PATH, byte for byte
//
// Commands run with the repository's root as their working folder (a
// temporary copy of examples/ in it, so that `list add` and `users add`
// leave the repository alone), one copy per `## ` section: the commands of
// one section build on each other, as a reader following it would. In the
// output the copy's folder reads as /srv/sluice, the README's checkout.

// readmeRoot is where the README's output shows the repository.
const readmeRoot = "/srv/sluice"

// A fence is one fenced code block of README.md.
type fence struct {
	lang    string   // the word after the backquotes: yaml, sh, console...
	line    int      // the README line of the opening fence, from 1
	mark    string   // the HTML comment on the line before, without <!-- -->
	body    []string // the lines inside, the fence's indentation removed
	section string   // the `## ` heading the block is under
}

// readmeFences parses README.md into its fenced blocks.
func readmeFences(t *testing.T) []fence {
	t.Helper()
	data, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	fences, err := parseFences(string(data))
	if err != nil {
		t.Fatal(err)
	}
	return fences
}

// parseFences returns the fenced blocks of a Markdown text.
func parseFences(text string) ([]fence, error) {
	lines := strings.Split(text, "\n")
	markRx := regexp.MustCompile(`^<!--\s*(.*?)\s*-->$`)
	var out []fence
	var cur *fence
	indent, section, prev := 0, "", ""
	for i, l := range lines {
		trimmed := strings.TrimSpace(l)
		switch {
		case cur != nil && trimmed == "```":
			out = append(out, *cur)
			cur = nil
		case cur != nil:
			cur.body = append(cur.body, strings.TrimPrefix(l, strings.Repeat(" ", indent)))
		case strings.HasPrefix(trimmed, "```"):
			cur = &fence{lang: strings.TrimPrefix(trimmed, "```"), line: i + 1, section: section}
			indent = len(l) - len(strings.TrimLeft(l, " "))
			if m := markRx.FindStringSubmatch(prev); m != nil {
				cur.mark = m[1]
			}
		case strings.HasPrefix(l, "## "):
			section = strings.TrimPrefix(l, "## ")
		}
		if trimmed != "" {
			prev = trimmed
		}
	}
	if cur != nil {
		return nil, fmt.Errorf("README.md:%d: the fence is never closed", cur.line)
	}
	return out, nil
}

// TestREADMEParser: the parser finds fences (indented ones too), their
// marks and sections, and splits console blocks into commands and output.
func TestREADMEParser(t *testing.T) {
	md := "## One\n\n<!-- not a whole config -->\n```yaml\nrules: []\n```\n\n## Two\n" +
		"- item\n\n  ```console\n  $ sluice list -c x.yaml\n  a: 1 entry\n\n  $ curl -s http://x/\n  ok\n  $ echo pw | sluice users add a --password-stdin\n  ```\n" +
		"```sh\nmake test\nsudo -u sluice sluice version\n```\n"
	fences, err := parseFences(md)
	if err != nil {
		t.Fatal(err)
	}
	if len(fences) != 3 || fences[0].mark != "not a whole config" || fences[0].section != "One" || fences[0].line != 4 ||
		fences[1].lang != "console" || fences[1].section != "Two" || fences[1].mark != "" || fences[1].body[0] != "$ sluice list -c x.yaml" {
		t.Fatalf("fences: %+v", fences)
	}
	cmds := fences[1].commands()
	want := []readmeCmd{
		{line: 12, text: "sluice list -c x.yaml", out: []string{"a: 1 entry"}},
		{line: 17, text: "echo pw | sluice users add a --password-stdin"},
	}
	if fmt.Sprint(cmds) != fmt.Sprint(want) {
		t.Errorf("commands:\n got %+v\nwant %+v", cmds, want)
	}
	if cmds := fences[2].commands(); len(cmds) != 1 || skipReason(cmds[0].text) != "needs root" {
		t.Errorf("sh commands: %+v", cmds)
	}
	if _, err := parseFences("```sh\nsluice version\n"); err == nil {
		t.Error("an unclosed fence was accepted")
	}
}

// copyExamples copies ../examples into dir/examples and returns dir.
func copyExamples(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	err := filepath.WalkDir("../examples", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel("..", p)
		dst := filepath.Join(dir, rel)
		if d.IsDir() {
			if d.Name() == "cache" { // a local run's downloads are not the repository's
				return filepath.SkipDir
			}
			return os.MkdirAll(dst, 0o755)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, data, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestREADMEConfigs: every ```yaml block validates as a whole config beside
// the files of examples/, unless it is marked as a fragment, and then it
// must not; a block marked with a file is that file.
func TestREADMEConfigs(t *testing.T) {
	n := 0
	for _, f := range readmeFences(t) {
		if path, ok := strings.CutPrefix(f.mark, "file: "); ok {
			checkFileBlock(t, f, path)
		}
		if f.lang != "yaml" {
			continue
		}
		n++
		if strings.HasPrefix(f.mark, "not run") {
			t.Logf("README.md:%d: yaml block not validated (%s)", f.line, f.mark)
			continue
		}
		dir := copyExamples(t)
		cfg := filepath.Join("examples", fmt.Sprintf("readme-%d.yaml", f.line))
		writeFiles(t, dir, map[string]string{cfg: strings.Join(f.body, "\n")})
		out, code := runCLI(t, dir, "config", "validate", "-c", cfg)
		switch partial := f.mark == "not a whole config"; {
		case partial && code == 0:
			t.Errorf("README.md:%d: marked <!-- not a whole config -->, yet it validates: remove the mark\n%s", f.line, out)
		case !partial && code != 0:
			t.Errorf("README.md:%d: this yaml block is not a valid config (config validate: exit %d):\n%s"+
				"fix it, or mark a fragment with <!-- not a whole config --> on the line before its fence",
				f.line, code, strings.ReplaceAll(out, dir, readmeRoot))
		}
	}
	if n < 10 {
		t.Fatalf("found %d yaml blocks in README.md; the parser is broken", n)
	}
}

// checkFileBlock fails unless the block f is the repository's file path.
func checkFileBlock(t *testing.T, f fence, path string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", path))
	if err != nil {
		t.Errorf("README.md:%d: the block is marked as %s: %v", f.line, path, err)
		return
	}
	if want := strings.Join(f.body, "\n") + "\n"; string(data) != want {
		t.Errorf("README.md:%d: the block differs from %s; make them the same:\n--- README\n%s--- %s\n%s", f.line, path, want, path, data)
	}
}

// A readmeCmd is one `sluice` command of the README, with the output shown
// after it (console blocks only; nil when none is shown).
type readmeCmd struct {
	line int
	text string
	out  []string
}

// commands returns the sluice commands of a sh, shell or console block.
func (f fence) commands() []readmeCmd {
	var cmds []readmeCmd
	var cur *readmeCmd
	for i, l := range f.body {
		line := f.line + 1 + i
		if f.lang == "console" {
			if c, ok := strings.CutPrefix(l, "$ "); ok {
				cmds = appendCmd(cmds, cur)
				cur = &readmeCmd{line: line, text: c}
			} else if cur != nil {
				cur.out = append(cur.out, l)
			}
			continue
		}
		cmds = appendCmd(cmds, cur)
		cur = &readmeCmd{line: line, text: l}
	}
	return appendCmd(cmds, cur)
}

// appendCmd appends c to cmds when it runs sluice, without the blank lines
// that end its output.
func appendCmd(cmds []readmeCmd, c *readmeCmd) []readmeCmd {
	if c == nil || !sluiceCmdRx.MatchString(c.text) {
		return cmds
	}
	for len(c.out) > 0 && strings.TrimSpace(c.out[len(c.out)-1]) == "" {
		c.out = c.out[:len(c.out)-1]
	}
	return append(cmds, *c)
}

// sluiceCmdRx matches a command line that runs sluice: it starts with
// sluice (after sudo and its -u USER), pipes into it, or substitutes its
// output. "sluice" as a user or group name does not count.
var sluiceCmdRx = regexp.MustCompile(`^(sudo\s+(-u\s+\S+\s+)?)?sluice\s|\|\s*sluice\s|[<$]\(sluice\s`)

// notRun lists the commands the README shows but the test does not run,
// and why; each is logged. Everything else runs.
var notRun = []struct {
	rx     *regexp.Regexp
	reason string
}{
	{regexp.MustCompile(`^sudo\s`), "needs root"},
	{regexp.MustCompile(`^source\s`), "changes the reader's shell"},
	{regexp.MustCompile(`^sluice serve\b`), "runs the proxy"},
	{regexp.MustCompile(`^sluice reload\b`), "signals a running server"},
	{regexp.MustCompile(`^sluice list\b.*\supdate\b`), "downloads from the network"},
	{regexp.MustCompile(`^sluice users\b.*\sadd\s+\S+\s*(#.*)?$`), "asks for a password on a terminal"},
}

// TestREADMECommands runs the README's sluice commands and compares what
// they print with the output the README shows after them.
func TestREADMECommands(t *testing.T) {
	hosts := exampleHosts(t)
	bin := filepath.Dir(sluiceBin)
	dirs := map[string]string{} // section -> its copy of the repository
	ran := 0
	for _, f := range readmeFences(t) {
		if f.lang != "sh" && f.lang != "shell" && f.lang != "console" {
			continue
		}
		for _, c := range f.commands() {
			if f.mark != "" && strings.HasPrefix(f.mark, "not run") {
				t.Logf("README.md:%d: %s: %s", c.line, f.mark, c.text)
				continue
			}
			if reason := skipReason(c.text); reason != "" {
				t.Logf("README.md:%d: not run (%s): %s", c.line, reason, c.text)
				continue
			}
			if msg := resolves(c, hosts); msg != "" {
				t.Errorf("README.md:%d: %s: %s", c.line, c.text, msg)
				continue
			}
			dir := dirs[f.section]
			if dir == "" {
				dir = copyExamples(t)
				dirs[f.section] = dir
			}
			out, code := runShell(t, dir, bin, c.text)
			ran++
			got := normalize(strings.ReplaceAll(out, dir, readmeRoot))
			switch {
			case c.out != nil && got != normalize(strings.Join(c.out, "\n")):
				t.Errorf("README.md:%d: `%s` (exit %d) printed:\n%s\nthe README shows:\n%s",
					c.line, c.text, code, got, strings.Join(c.out, "\n"))
			case c.out == nil && code > 1:
				t.Errorf("README.md:%d: `%s` failed (exit %d):\n%s", c.line, c.text, code, got)
			}
		}
	}
	if ran < 15 {
		t.Fatalf("ran %d commands of README.md; the parser is broken", ran)
	}
}

func skipReason(cmd string) string {
	for _, s := range notRun {
		if s.rx.MatchString(cmd) && !strings.Contains(cmd, "--password-stdin") {
			return s.reason
		}
	}
	return ""
}

// resolves says why c may look a name up in DNS, which would leave
// loopback: `sluice check` resolves a name it allows on the direct route.
// The README output shows that step, so a check runs when it has
// --no-resolve, or the README shows its output with no direct route and
// with every name it resolves in the example's hosts:.
func resolves(c readmeCmd, hosts map[string]bool) string {
	if !regexp.MustCompile(`^sluice check\s`).MatchString(c.text) || strings.Contains(c.text, "--no-resolve") {
		return ""
	}
	if c.out == nil {
		return "a check without --no-resolve may look names up in DNS: show its output, or add --no-resolve"
	}
	for _, l := range c.out {
		if l == "route: direct" {
			return "allowed on the direct route, it would look the name up in DNS: add --no-resolve"
		}
		if name, ok := strings.CutPrefix(l, "resolved: "); ok {
			name = strings.Fields(name)[0]
			if !hosts[strings.TrimSuffix(name, ":")] {
				return fmt.Sprintf("it resolves %s, which examples/sluice.yaml's hosts: does not map: add --no-resolve", name)
			}
		}
	}
	return ""
}

// exampleHosts returns the names examples/sluice.yaml maps under hosts:.
func exampleHosts(t *testing.T) map[string]bool {
	t.Helper()
	data, err := os.ReadFile("../examples/sluice.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Hosts map[string]any `yaml:"hosts"`
	}
	if err := yaml.Unmarshal(data, &cfg); err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for n := range cfg.Hosts {
		names[n] = true
	}
	return names
}

// runShell runs a README command line with sh in dir, the sluice under
// test first in PATH, and returns its output (stdout and stderr as a
// terminal would interleave them) and exit status.
func runShell(t *testing.T, dir, bin, line string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", "-c", line)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"),
		"HTTP_PROXY=", "HTTPS_PROXY=", "http_proxy=", "https_proxy=", "ALL_PROXY=")
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("`%s` did not end within 60s:\n%s", line, out)
	}
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("`%s`: %v", line, err)
	}
	return string(out), code
}

var (
	timeRx = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)`)
	leftRx = regexp.MustCompile(`\(\d[\dhms.]* left\)`)
)

// normalize makes output comparable: times and time left vary from run to
// run, trailing blanks and blank lines at the end do not count.
func normalize(s string) string {
	s = timeRx.ReplaceAllString(s, "TIME")
	s = leftRx.ReplaceAllString(s, "(DURATION left)")
	lines := strings.Split(strings.TrimRight(s, "\n "), "\n")
	for i, l := range lines {
		lines[i] = strings.TrimRight(l, " \t")
	}
	return strings.Join(lines, "\n")
}

// TestDefaultConfigSamples: the sample rules of `sluice config default`,
// uncommented as a user would (the "#" taken off, or "# "), give a config
// that validates with every sample rule, as the file promises.
func TestDefaultConfigSamples(t *testing.T) {
	dir := t.TempDir()
	def, code := runCLI(t, dir, "config", "default")
	if code != 0 {
		t.Fatalf("config default: exit %d:\n%s", code, def)
	}
	lines := strings.Split(def, "\n")
	start := slices.Index(lines, "rules:")
	if start < 0 {
		t.Fatalf("config default has no line `rules:` for its samples:\n%s", def)
	}
	for _, strip := range []string{"#", "# "} {
		out := slices.Clone(lines)
		samples := 0
		for i := start + 1; i < len(out); i++ {
			if strings.HasPrefix(out[i], "#   ") {
				out[i] = strings.TrimPrefix(out[i], strip)
				if strings.HasPrefix(strings.TrimSpace(out[i]), "- ") {
					samples++
				}
			}
		}
		if samples < 5 {
			t.Fatalf("found %d sample rules after line %d of config default", samples, start+1)
		}
		path := filepath.Join(dir, "uncommented.yaml")
		writeFiles(t, dir, map[string]string{"uncommented.yaml": strings.Join(out, "\n")})
		got, code := runCLI(t, dir, "config", "validate", "-c", path)
		if want := fmt.Sprintf(": ok: %d rules,", samples); code != 0 || !strings.Contains(got, want) {
			t.Errorf("config default with its sample rules uncommented (%q taken off): exit %d, want 0 and %q:\n%s", strip, code, want, got)
		}
	}
}
