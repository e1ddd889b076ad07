package auth

import (
	"crypto/des"
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// kindFlags are the real htpasswd's flags for each kind it writes.
var kindFlags = []struct {
	flag string
	kind Kind
}{
	{"-B", Bcrypt}, {"-2", SHACrypt}, {"-5", SHACrypt}, {"-m", MD5}, {"-s", SHA1}, {"-d", DES},
}

// mixedFile writes one user per hash kind with the real htpasswd; user
// "u-B" has password "pw-B" and so on. DES reads 8 bytes of a password, so
// the passwords are short.
func mixedFile(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "users.htpasswd")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, k := range kindFlags {
		htpasswd(t, k.flag, "-b", path, "u"+k.flag, "pw"+k.flag)
	}
	return path
}

// TestEveryKindVerifies: every line written by the real htpasswd -B, -2,
// -5, -m, -s and -d verifies with its password and no other, and is of the
// kind its flag says.
func TestEveryKindVerifies(t *testing.T) {
	path := mixedFile(t)
	data, _ := os.ReadFile(path)
	for _, prefix := range []string{":$2y$", ":$5$", ":$6$", ":$apr1$", ":{SHA}"} {
		if !strings.Contains(string(data), prefix) {
			t.Fatalf("htpasswd wrote no %s line:\n%s", prefix, data)
		}
	}
	f, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if ws := f.Warnings(); len(ws) != 0 {
		t.Fatalf("warnings: %v", ws)
	}
	users, _, err := ReadUsers(path)
	if err != nil || len(users) != len(kindFlags) {
		t.Fatalf("ReadUsers = %v, %v", users, err)
	}
	for i, k := range kindFlags {
		if users[i].Name != "u"+k.flag || users[i].Kind != k.kind {
			t.Errorf("user %d = %+v, want u%s of kind %v", i, users[i], k.flag, k.kind)
		}
		if !f.Authenticate(client, "u"+k.flag, "pw"+k.flag) {
			t.Errorf("%s (%v): right password refused", k.flag, k.kind)
		}
		for _, wrong := range []string{"pw" + k.flag + "x", "PW" + k.flag, "", "pw-X"} {
			if k.kind == DES && strings.HasPrefix(wrong, "pw"+k.flag) {
				continue // DES ignores what follows the 8th byte; "pw-dx" has 5
			}
			if f.Authenticate(client2, "u"+k.flag, wrong) {
				t.Errorf("%s (%v): wrong password %q accepted", k.flag, k.kind, wrong)
			}
		}
	}
}

// TestMD5SquidLine: an $apr1$ line as Squid installations carry it (from
// htpasswd's default, -m) and a $1$ md5crypt line from perl's crypt.
func TestMD5SquidLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users")
	htpasswd(t, "-c", "-b", path, "squid", "s3cret") // -m is the default
	out, err := exec.Command("perl", "-e", `print "md5crypt:", crypt("hunter2", q($1$saltsalt$)), "\n"`).Output()
	if err != nil {
		t.Fatal("perl: ", err)
	}
	fh, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	fh.Write(out)
	fh.Close()
	f, err := Load(path)
	if err != nil || len(f.Warnings()) != 0 {
		t.Fatalf("Load = %v, warnings %v", err, f.Warnings())
	}
	if !f.Authenticate(client, "squid", "s3cret") || !f.Authenticate(client, "md5crypt", "hunter2") {
		t.Error("md5 line refused")
	}
	if f.Authenticate(client2, "squid", "s3cre") || f.Authenticate(client2, "md5crypt", "hunter") {
		t.Error("md5 line accepted a wrong password")
	}
}

// TestDESCore: with salt "..", which swaps nothing, crypt's DES is the
// standard one: check the tables against crypto/des on random keys.
func TestDESCore(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		var key, plain [8]byte
		binary.BigEndian.PutUint64(key[:], r.Uint64())
		binary.BigEndian.PutUint64(plain[:], r.Uint64())
		c, err := des.NewCipher(key[:])
		if err != nil {
			t.Fatal(err)
		}
		var want [8]byte
		c.Encrypt(want[:], plain[:])

		var kb, block [64]byte
		for i := range 64 {
			kb[i] = key[i/8] >> (7 - i%8) & 1
			block[i] = plain[i/8] >> (7 - i%8) & 1
		}
		e := desE
		desEncrypt(&block, desSchedule(&kb), &e)
		var got [8]byte
		for i := range 64 {
			got[i/8] |= block[i] << (7 - i%8)
		}
		if got != want {
			t.Fatalf("key %x plain %x: got %x, want %x", key, plain, got, want)
		}
	}
}

// TestDESCryptAgainstPerl compares desCrypt with the system's crypt(3)
// through perl, for salts that set every salt bit, long, empty and
// 8-bit passwords.
func TestDESCryptAgainstPerl(t *testing.T) {
	cases := [][2]string{
		{"wonderland", "ab"}, {"x", "./"}, {"12345678901", "zZ"}, {"", "AA"},
		{"p\xe4ssw\xf6rd", "9."}, {"hunter2", "zz"}, {"abcdefgh", "Az"}, {"abcdefghX", "Az"},
	}
	var script strings.Builder
	for _, c := range cases {
		script.WriteString(`print crypt(pack("H*", "` + hexOf(c[0]) + `"), "` + c[1] + `"), "\n";`)
	}
	out, err := exec.Command("perl", "-e", script.String()).Output()
	if err != nil {
		t.Fatal("perl: ", err)
	}
	want := strings.Fields(string(out))
	if len(want) != len(cases) {
		t.Fatalf("perl printed %q", out)
	}
	for i, c := range cases {
		if got := desCrypt(c[0], c[1]); got != want[i] {
			t.Errorf("desCrypt(%q, %q) = %s, want %s", c[0], c[1], got, want[i])
		}
	}
}

func hexOf(s string) string {
	const digits = "0123456789abcdef"
	var b strings.Builder
	for i := range len(s) {
		b.WriteByte(digits[s[i]>>4])
		b.WriteByte(digits[s[i]&15])
	}
	return b.String()
}

// TestLimitEveryKind: for every kind, a (client, user) pair that failed too
// often is refused without a check, even with the right password.
func TestLimitEveryKind(t *testing.T) {
	f, err := Load(mixedFile(t))
	if err != nil {
		t.Fatal(err)
	}
	clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	f.Now, f.FailureBurst, f.FailureEvery = clock.Now, 2, time.Minute
	c := netip.MustParseAddr("192.0.2.9")
	for _, k := range kindFlags {
		exhaust(t, f, c, "u"+k.flag)
		before := f.Stats()
		if f.Authenticate(c, "u"+k.flag, "pw"+k.flag) {
			t.Errorf("%s: limited pair accepted", k.flag)
		}
		if after := f.Stats(); after.Verifications != before.Verifications || after.Limited != before.Limited+1 {
			t.Errorf("%s: limited attempt was checked: %+v then %+v", k.flag, before, after)
		}
		if !f.Authenticate(client, "u"+k.flag, "pw"+k.flag) {
			t.Errorf("%s: another client refused", k.flag)
		}
	}
}

// TestCacheEveryKind: a fast kind is cached like bcrypt, and the cache
// holds only for the same password and hash: a changed line is checked again.
func TestCacheEveryKind(t *testing.T) {
	path := mixedFile(t)
	f, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range kindFlags {
		u, pw := "u"+k.flag, "pw"+k.flag
		before := f.Stats()
		if !f.Authenticate(client, u, pw) || !f.Authenticate(client, u, pw) {
			t.Fatalf("%s refused", k.flag)
		}
		if s := f.Stats(); s.Verifications != before.Verifications+1 || s.CacheHits != before.CacheHits+1 {
			t.Errorf("%s: not cached: %+v then %+v", k.flag, before, s)
		}
		if f.Authenticate(client, u, pw+"?") {
			t.Errorf("%s: the cache answered another password", k.flag)
		}
	}
	// Re-set u-s's password with another kind: the old one stops working.
	htpasswd(t, "-m", "-b", path, "u-s", "changed")
	if err := f.Reload(); err != nil {
		t.Fatal(err)
	}
	if f.Authenticate(client, "u-s", "pw-s") {
		t.Error("the old password still works from the cache")
	}
	if !f.Authenticate(client, "u-s", "changed") {
		t.Error("the new password is refused")
	}
}

// TestUnknownUserCostsTheCommonKind: an unknown user is checked against a
// dummy of the file's most common kind, so a file of SHA-1 users does not
// answer unknown users with a bcrypt delay (which would tell who exists).
func TestUnknownUserCostsTheCommonKind(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users")
	htpasswd(t, "-c", "-s", "-b", path, "a", "1")
	htpasswd(t, "-s", "-b", path, "b", "2")
	htpasswd(t, "-B", "-b", path, "c", "3")
	f, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []Kind
	var mu sync.Mutex
	f.compare = func(e entry, _ string) bool {
		mu.Lock()
		kinds = append(kinds, e.kind)
		mu.Unlock()
		return false
	}
	f.Authenticate(client, "nobody", "x")
	if !slices.Equal(kinds, []Kind{SHA1}) {
		t.Errorf("unknown user checked against %v, want [sha1]", kinds)
	}
	for k := Bcrypt; k <= DES; k++ {
		if e := dummyEntry(k); e.kind != k || (k != Bcrypt && e.match == nil) {
			t.Errorf("dummy of %v = %+v", k, e)
		}
		if dummyEntry(k).match != nil && dummyEntry(k).match(dummyPassword) {
			t.Errorf("dummy of %v matches", k)
		}
	}
}

// TestChecksBoundedEveryKind: fast kinds take a check slot too, so the
// bound holds for a file of MD5 users as for bcrypt ones.
func TestChecksBoundedEveryKind(t *testing.T) {
	f, err := Load(mixedFile(t))
	if err != nil {
		t.Fatal(err)
	}
	var running, peak atomic.Int64
	seen := make(map[Kind]bool)
	var mu sync.Mutex
	f.compare = func(e entry, _ string) bool {
		mu.Lock()
		seen[e.kind] = true
		mu.Unlock()
		n := running.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		time.Sleep(5 * time.Millisecond)
		running.Add(-1)
		return false
	}
	var wg sync.WaitGroup
	for i := range 48 {
		k := kindFlags[i%len(kindFlags)]
		wg.Go(func() {
			f.Authenticate(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), "u"+k.flag, "x")
		})
	}
	wg.Wait()
	if p, max := peak.Load(), int64(runtime.NumCPU()); p > max || p < 1 {
		t.Errorf("peak concurrent checks = %d, want 1..%d", p, max)
	}
	if len(seen) != 5 {
		t.Errorf("kinds checked: %v", seen)
	}
}

// TestKindNames: the names and weakness `sluice users list` shows.
func TestKindNames(t *testing.T) {
	weak := map[Kind]bool{MD5: true, SHA1: true, DES: true}
	for k := Bcrypt; k <= DES; k++ {
		if k.Weak() != weak[k] || k.String() == "unknown" {
			t.Errorf("%d: %s weak=%v", k, k, k.Weak())
		}
	}
}

// TestZeroFile: a File not made by Load has no users and refuses everyone.
func TestZeroFile(t *testing.T) {
	var f File
	if f.Authenticate(client, "alice", "x") || len(f.Users()) != 0 || len(f.Warnings()) != 0 {
		t.Error("a zero File accepted or listed something")
	}
}
