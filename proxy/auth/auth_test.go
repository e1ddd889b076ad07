package auth

import (
	"bytes"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// htpasswd runs the real htpasswd with bcrypt.
func htpasswd(t *testing.T, args ...string) {
	t.Helper()
	bin, err := exec.LookPath("htpasswd")
	if err != nil {
		t.Fatal("htpasswd (apache2-utils) is required: ", err)
	}
	if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
		t.Fatalf("htpasswd %v: %v: %s", args, err, out)
	}
}

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

var (
	client  = netip.MustParseAddr("127.0.0.1")
	client2 = netip.MustParseAddr("127.0.0.2")
)

// usersFile writes alice and bob with the real htpasswd -B.
func usersFile(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "users.htpasswd")
	htpasswd(t, "-B", "-b", "-c", path, "alice", "wonderland")
	htpasswd(t, "-B", "-b", path, "bob", "builder")
	return path
}

func TestAuthenticateHtpasswdFile(t *testing.T) {
	f, err := Load(usersFile(t))
	if err != nil {
		t.Fatal(err)
	}
	if got := f.Users(); !slices.Equal(got, []string{"alice", "bob"}) {
		t.Errorf("Users = %q", got)
	}
	cases := []struct {
		user, password string
		want           bool
	}{
		{"alice", "wonderland", true},
		{"bob", "builder", true},
		{"alice", "builder", false},
		{"alice", "", false},
		{"carol", "wonderland", false},
		{"", "", false},
	}
	for _, tc := range cases {
		if got := f.Authenticate(client2, tc.user, tc.password); got != tc.want {
			t.Errorf("Authenticate(%q, %q) = %v, want %v", tc.user, tc.password, got, tc.want)
		}
	}
}

// TestCache shows a cache hit skips bcrypt, expiry and a changed password
// bring it back, and a removed user's cached password stops working.
func TestCache(t *testing.T) {
	path := usersFile(t)
	clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	f, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	f.Now, f.CacheTTL = clock.Now, time.Minute

	steps := []struct {
		name       string
		do         func()
		user, pw   string
		want       bool
		wantBcrypt int64 // cumulative bcrypt runs after the step
		wantHits   int64
	}{
		{"first check runs bcrypt", nil, "alice", "wonderland", true, 1, 0},
		{"second check is a cache hit", nil, "alice", "wonderland", true, 1, 1},
		{"wrong password is never cached", nil, "alice", "wonderlant", false, 2, 1},
		{"still a hit", func() { clock.Add(59 * time.Second) }, "alice", "wonderland", true, 2, 2},
		{"expired", func() { clock.Add(2 * time.Second) }, "alice", "wonderland", true, 3, 2},
		{"password changed on disk", func() {
			if err := SetPassword(path, "alice", "looking-glass"); err != nil {
				t.Fatal(err)
			}
			if err := f.Reload(); err != nil {
				t.Fatal(err)
			}
		}, "alice", "wonderland", false, 4, 2},
		{"new password", nil, "alice", "looking-glass", true, 5, 2},
		{"user removed", func() {
			if _, err := RemoveUser(path, "alice"); err != nil {
				t.Fatal(err)
			}
			if err := f.Reload(); err != nil {
				t.Fatal(err)
			}
		}, "alice", "looking-glass", false, 6, 2},
	}
	for _, st := range steps {
		if st.do != nil {
			st.do()
		}
		if got := f.Authenticate(client, st.user, st.pw); got != st.want {
			t.Errorf("%s: Authenticate = %v, want %v", st.name, got, st.want)
		}
		s := f.Stats()
		if s.Verifications != st.wantBcrypt || s.CacheHits != st.wantHits {
			t.Errorf("%s: bcrypt runs %d, hits %d; want %d, %d", st.name, s.Verifications, s.CacheHits, st.wantBcrypt, st.wantHits)
		}
	}
}

// TestRateLimit blocks a client after FailureBurst failures without running
// bcrypt, leaves other clients alone, and lets it in again after FailureEvery.
func TestRateLimit(t *testing.T) {
	var logs bytes.Buffer
	clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	f, err := Load(usersFile(t))
	if err != nil {
		t.Fatal(err)
	}
	f.Now, f.FailureBurst, f.FailureEvery = clock.Now, 3, time.Minute
	f.Logger = slog.New(slog.NewTextHandler(&logs, nil))

	for i := range 3 {
		if f.Authenticate(client, "bob", "guess-"+string(rune('a'+i))) {
			t.Fatal("wrong password accepted")
		}
	}
	if got := f.Stats().Verifications; got != 3 {
		t.Fatalf("bcrypt runs = %d, want 3", got)
	}
	if f.Authenticate(client, "bob", "builder") {
		t.Error("limited client accepted")
	}
	if s := f.Stats(); s.Verifications != 3 || s.Limited != 1 || s.Failures != 4 {
		t.Errorf("limited attempt ran bcrypt or was not counted: %+v", s)
	}
	if !f.Authenticate(client2, "bob", "builder") {
		t.Error("another client was limited too")
	}
	clock.Add(time.Minute)
	if !f.Authenticate(client, "bob", "builder") {
		t.Error("client still limited after FailureEvery")
	}
	out := logs.String()
	if strings.Count(out, "authentication failed") != 4 || !strings.Contains(out, "user=bob") ||
		!strings.Contains(out, "client=127.0.0.1") || !strings.Contains(out, "reason=\"rate limited\"") {
		t.Errorf("failure log incomplete:\n%s", out)
	}
	if strings.Contains(out, "guess-") || strings.Contains(out, "builder") {
		t.Errorf("a password leaked into the log:\n%s", out)
	}
}

// TestLoadSkipsBadLines: each bad line is skipped with a warning naming
// file and line, and without its hash; the good users keep working.
func TestLoadSkipsBadLines(t *testing.T) {
	const good = "$2y$05$.yGVS9ETNxGB9ULjXdkJhe//eEIjnkkablNFXRMyfOWy8P2u4J84C" // "password"
	cases := []struct {
		name, text string
		line       int
		want       error
	}{
		{"apr1 truncated", "# users\nalice:$apr1$abc$def\n", 2, ErrHash},
		{"sha1 short", "alice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g\n", 1, ErrHash},
		{"crypt 12 chars", "alice:rl0uTLGoKdBq\n", 1, ErrHashKind},
		{"plain", "alice:secret\n", 1, ErrHashKind},
		{"ssha", "alice:{SSHA}W6ph5Mm5Pz8GgiULbPgzG37mj9gxyz=\n", 1, ErrHashKind},
		{"argon2", "alice:$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA\n", 1, ErrHashKind},
		{"sha512 short", "alice:$6$salt$abc\n", 1, ErrHash},
		{"no colon", "bob\n", 1, ErrSyntax},
		{"empty user", ":" + good + "\n", 1, ErrUserName},
		{"duplicate", "alice:" + good + "\n\nalice:" + good + "\n", 3, ErrDuplicate},
		{"truncated bcrypt", "alice:$2y$05$short\n", 1, ErrHash},
		{"bcrypt 2x", "alice:$2x$05$qIFLMI3PMWaYjIPeVkbOoOSo3pSIbg8crAc0k04SNGbW87o3IbL7W\n", 1, ErrHashKind},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "users")
			text := "carol:" + good + "\n" + tc.text
			if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
			f, err := Load(path)
			if err != nil {
				t.Fatalf("Load = %v, want the good user loaded", err)
			}
			ws := f.Warnings()
			if len(ws) != 1 {
				t.Fatalf("warnings = %v, want one", ws)
			}
			var pe *ParseError
			if !errors.As(ws[0], &pe) || pe.Line != tc.line+1 || pe.File != path || !errors.Is(ws[0], tc.want) {
				t.Fatalf("warning %v, want %v at %s:%d", ws[0], tc.want, path, tc.line+1)
			}
			if !strings.HasPrefix(ws[0].Error(), path+":") {
				t.Errorf("warning %q does not start with file:line", ws[0])
			}
			_, hash, _ := strings.Cut(strings.TrimSpace(tc.text[strings.LastIndex(strings.TrimSpace(tc.text), "\n")+1:]), ":")
			if hash != "" && strings.Contains(ws[0].Error(), hash) {
				t.Errorf("warning %q holds the hash", ws[0])
			}
			if !f.Authenticate(client, "carol", "password") {
				t.Error("the good user stopped working")
			}
			pw := "password" // the duplicate's, and a bcrypt check of an unknown user costs seconds under -race
			if tc.name == "plain" {
				pw = "secret" // a plain-text line is no password
			}
			if f.Authenticate(client2, "alice", pw) {
				t.Error("a skipped line's user authenticated")
			}
		})
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("missing file loaded")
	}
}

// TestWarningsBounded: a file of garbage keeps at most maxWarnings and says
// how many more there were.
func TestWarningsBounded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users")
	if err := os.WriteFile(path, []byte(strings.Repeat("garbage\n", 1000)), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	ws := f.Warnings()
	if len(ws) != maxWarnings+1 || !strings.Contains(ws[maxWarnings].Error(), "900 more bad lines") {
		t.Fatalf("%d warnings, last %v", len(ws), ws[len(ws)-1])
	}
	if len(f.Users()) != 0 || f.Authenticate(client, "garbage", "") {
		t.Error("users from garbage")
	}
}

func TestReloadKeepsOldOnError(t *testing.T) {
	path := usersFile(t)
	f, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(path, 0o700); err != nil { // unreadable as a file
		t.Fatal(err)
	}
	if err := f.Reload(); err == nil {
		t.Fatal("Reload accepted a directory")
	}
	if !slices.Equal(f.Users(), []string{"alice", "bob"}) || !f.Authenticate(client, "alice", "wonderland") {
		t.Error("old users lost after a failed reload")
	}
}

// TestEditKeepsFile checks that edits keep comments and order, write mode
// 0600 through a rename, leave no temporary file, and produce hashes the
// real htpasswd verifies.
func TestEditKeepsFile(t *testing.T) {
	path := usersFile(t)
	orig, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(orig)), "\n")
	text := "# proxy users\n" + lines[0] + "\n\n# the builder\n" + lines[1] + "\n"
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	before, _ := os.Stat(path)

	if err := SetPassword(path, "carol", "c4rol"); err != nil {
		t.Fatal(err)
	}
	// Compare right after one edit: a second one may reuse the inode number
	// the first one freed.
	renamed, _ := os.Stat(path)
	if os.SameFile(before, renamed) {
		t.Error("file was rewritten in place, not renamed")
	}
	if err := SetPassword(path, "alice", "n3w"); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	got := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	if len(got) != 6 || got[0] != "# proxy users" || !strings.HasPrefix(got[1], "alice:$2") ||
		got[2] != "" || got[3] != "# the builder" || got[4] != lines[1] || !strings.HasPrefix(got[5], "carol:$2a$10$") {
		t.Fatalf("file after edits:\n%s", data)
	}
	after, _ := os.Stat(path)
	if after.Mode().Perm() != 0o600 {
		t.Errorf("mode = %v, want 0600", after.Mode().Perm())
	}
	htpasswd(t, "-v", "-b", path, "alice", "n3w")
	htpasswd(t, "-v", "-b", path, "carol", "c4rol")
	htpasswd(t, "-v", "-b", path, "bob", "builder")

	if ok, err := RemoveUser(path, "bob"); !ok || err != nil {
		t.Fatalf("RemoveUser = %v, %v", ok, err)
	}
	if ok, err := RemoveUser(path, "bob"); ok || err != nil {
		t.Fatalf("second RemoveUser = %v, %v", ok, err)
	}
	users, err := ListUsers(path)
	if err != nil || !slices.Equal(users, []string{"alice", "carol"}) {
		t.Errorf("ListUsers = %q, %v", users, err)
	}
	data, _ = os.ReadFile(path)
	if !strings.Contains(string(data), "# the builder\n") {
		t.Errorf("comment lost:\n%s", data)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("temporary files left: %v", entries)
	}
	for _, bad := range []string{"", "a:b", "#x", "tab\tname", "new\nline"} {
		if err := SetPassword(path, bad, "x"); !errors.Is(err, ErrUserName) {
			t.Errorf("SetPassword(%q) = %v, want ErrUserName", bad, err)
		}
	}
	// A new file is created with mode 0600.
	fresh := filepath.Join(t.TempDir(), "new.htpasswd")
	if err := SetPassword(fresh, "dave", "d"); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(fresh); st.Mode().Perm() != 0o600 {
		t.Errorf("new file mode = %v", st.Mode().Perm())
	}
	htpasswd(t, "-v", "-b", fresh, "dave", "d")
}

func FuzzParseLine(f *testing.F) {
	f.Add("alice:$2y$05$qIFLMI3PMWaYjIPeVkbOoOSo3pSIbg8crAc0k04SNGbW87o3IbL7W")
	f.Add("# comment")
	f.Add("")
	f.Add("bob:$apr1$x$y")
	f.Add("bob:$apr1$DGOoCQ4p$GnAr5C6w6e9CX91tqb6Oc0")
	f.Add("carol:{SHA}abc")
	f.Add("carol:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=")
	f.Add("dave:abbIw0V4oaGvc")
	f.Add("erin:$5$rounds=1000$salt$" + strings.Repeat("a", 43))
	f.Add("dave\r")
	f.Add(":$2b$10$")
	f.Fuzz(func(t *testing.T, line string) {
		user, e, ok, err := parseLine(line)
		if err != nil || !ok {
			if user != "" || e.hash != "" {
				t.Fatalf("no entry but user %q hash %q", user, e.hash)
			}
			if err != nil {
				u, h, _ := strings.Cut(strings.TrimSpace(line), ":")
				// The fixed texts name the kinds ("$apr1$", "{SHA}") and the
				// message names the user: only the rest must not hold the hash.
				msg := strings.Replace(err.Error(), "user "+u+":", "", 1)
				for _, fixed := range []string{ErrHashKind.Error(), ErrHash.Error(),
					"bcrypt is 60 characters", "sha-crypt is $5$ or $6$, [rounds=N$]salt$hash",
					"md5 is $apr1$salt$ and 22 characters", "{SHA} is followed by 28 characters of base64"} {
					msg = strings.ReplaceAll(msg, fixed, "")
				}
				if h = strings.TrimSpace(h); len(h) > 4 && strings.Contains(msg, h) {
					t.Fatalf("error %q holds the hash", err)
				}
			}
			return
		}
		if checkUser(user) != nil || e.kind < Bcrypt || e.kind > DES || lineUser(line) != user {
			t.Fatalf("accepted %q as user %q kind %v", line, user, e.kind)
		}
		if e.kind != Bcrypt && e.match == nil {
			t.Fatalf("%v entry without a check", e.kind)
		}
		// Must not panic, whatever the hash (the slow kinds' costs are the fuzzer's to choose).
		if e.kind == MD5 || e.kind == SHA1 || e.kind == DES {
			(&File{}).check(e, "password")
		}
	})
}
