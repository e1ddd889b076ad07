// Package auth checks proxy users against an htpasswd file as Squid's
// basic_ncsa_auth reads it: bcrypt ($2y$, $2a$, $2b$), SHA-256/512 crypt
// ($5$, $6$), Apache MD5 ($apr1$, and md5crypt $1$), SHA-1 ({SHA}) and
// crypt(3) DES lines all verify (see Kind; the MD5, SHA-1 and DES kinds are
// weak). A line that is malformed or of another kind is skipped and reported
// (File.Warnings, with file and line); the other users keep working. Both
// front ends use it: HTTP with Proxy-Authorization: Basic, SOCKS5 with RFC
// 1929.
//
// bcrypt costs tens of milliseconds per check, so successful verifications
// are cached for a short time, keyed by a hash of user, password and stored
// hash, whatever the kind. Failed attempts are rate limited per (client,
// user name), the client being its IPv4 address or its IPv6 /64: a limited
// pair is rejected without checking the password, whatever the kind, and
// other users behind the same address (a NAT) are not affected. At most one
// password check per CPU runs at once. Passwords are never logged, nor are
// hashes.
//
// The file helpers (SetPassword, RemoveUser) rewrite the file atomically
// (temporary file and rename, mode 0600) and keep its other lines, comments
// and order.
package auth

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/time/rate"
)

// Defaults for the zero fields of File.
const (
	// DefaultCacheTTL is how long a successful verification is remembered.
	DefaultCacheTTL = 5 * time.Minute
	// DefaultFailureBurst is how many failures a (client, user) pair may make at once.
	DefaultFailureBurst = 5
	// DefaultFailureEvery is how often a limited pair regains one attempt.
	DefaultFailureEvery = 10 * time.Second
	// Cost is the bcrypt cost SetPassword uses, as `htpasswd -B` does.
	Cost = 10
)

const (
	maxCache    = 4096  // cached verifications
	maxLimiters = 16384 // (client, user) pairs with a failure history
)

// maxWarnings bounds the bad lines a File remembers.
const maxWarnings = 100

// checkSlots bounds the password checks running at once in the process,
// whatever the number of Files and the hash kind: a bcrypt check costs tens
// of milliseconds of one CPU, and a flood of attempts with ever new user
// names (each pair has its own allowance) must queue rather than starve the
// proxy.
var checkSlots = make(chan struct{}, runtime.NumCPU())

var (
	// ErrSyntax means a line is not "user:hash".
	ErrSyntax = errors.New("auth: line is not user:hash")
	// ErrDuplicate means a user appears on two lines; neither is used.
	ErrDuplicate = errors.New("auth: duplicate user: none of its lines is used")
	// ErrUserName means a user name is empty or holds ':', '#' at the start, or a control character.
	ErrUserName = errors.New("auth: invalid user name")
)

// ParseError is one bad line of an htpasswd file.
type ParseError struct {
	// File is the path of the htpasswd file.
	File string
	// Line is the 1-based line number.
	Line int
	// Err is what is wrong with the line.
	Err error
}

// Error renders "file:line: problem", without the package's "auth: "
// (after the position, "auth:" would read as the config key).
func (e *ParseError) Error() string {
	return fmt.Sprintf("%s:%d: %s", e.File, e.Line, strings.TrimPrefix(e.Err.Error(), "auth: "))
}

// Unwrap returns Err.
func (e *ParseError) Unwrap() error { return e.Err }

// File is a loaded htpasswd file. It is safe for concurrent use. Its
// exported fields must be set before the first Authenticate.
type File struct {
	// Logger gets one line per failed attempt (user and client, never the
	// password). If nil, nothing is logged.
	Logger *slog.Logger
	// CacheTTL is how long a successful verification is cached. Zero means 5 min.
	CacheTTL time.Duration
	// FailureBurst is how many failed attempts a (client, user) pair may
	// make before it is limited. Zero means 5.
	FailureBurst int
	// FailureEvery is how often a limited pair regains one attempt. Zero means 10 s.
	FailureEvery time.Duration
	// Now returns the current time. If nil, time.Now.
	Now func() time.Time

	path string

	mu  sync.RWMutex
	tab *table

	cacheMu sync.Mutex
	cache   map[[sha256.Size]byte]time.Time // key → expiry

	lim limiters

	// compare checks a password against an entry; nil means the entry's
	// own check (tests count concurrent runs).
	compare func(e entry, password string) bool

	verifications, cacheHits, limited, failures atomic.Int64
}

// Stats counts what a File did since it was loaded.
type Stats struct {
	// Verifications counts password checks run (of any hash kind).
	Verifications int64
	// CacheHits counts attempts answered from the cache.
	CacheHits int64
	// Limited counts attempts rejected by the rate limit without a check.
	Limited int64
	// Failures counts rejected attempts, limited ones included.
	Failures int64
}

// Load reads an htpasswd file. A line with an unsupported hash kind, a
// malformed line and both lines of a duplicate user are skipped and kept in
// Warnings as *ParseError naming file:line; the other users work. Blank
// lines and lines starting with '#' are ignored. Only a file that cannot be
// read is an error.
func Load(path string) (*File, error) {
	tab, err := readFile(path)
	if err != nil {
		return nil, err
	}
	return &File{path: path, tab: tab, cache: make(map[[sha256.Size]byte]time.Time)}, nil
}

// Reload re-reads the file. When it cannot be read, the old users stay and
// the error is returned; bad lines are skipped as in Load.
func (f *File) Reload() error {
	tab, err := readFile(f.path)
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.tab = tab
	f.mu.Unlock()
	return nil
}

// Has reports whether user is in the file.
func (f *File) Has(user string) bool {
	_, ok := f.table().users[user]
	return ok
}

// Users returns the user names in file order.
func (f *File) Users() []string {
	return slices.Clone(f.table().order)
}

// table returns the users of the last reading; a File not made by Load has none.
func (f *File) table() *table {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.tab == nil {
		return &table{common: Bcrypt}
	}
	return f.tab
}

// Warnings returns the lines skipped by the last Load or Reload, each a
// *ParseError naming file and line (at most 100, then one saying how many
// more). They hold neither hashes nor passwords.
func (f *File) Warnings() []error {
	return slices.Clone(f.table().warnings)
}

// Stats returns the counters.
func (f *File) Stats() Stats {
	return Stats{
		Verifications: f.verifications.Load(),
		CacheHits:     f.cacheHits.Load(),
		Limited:       f.limited.Load(),
		Failures:      f.failures.Load(),
	}
}

// Authenticate reports whether password is user's. A (client, user) pair
// that failed too often is rejected without checking the password, even
// the right one, until it regains an attempt; the same user from another
// client, and other users from the same client, are not affected. Clients
// are keyed by their IPv4 address or their IPv6 /64. An unknown user costs
// one check too, of the file's most common hash kind, so that timing does
// not tell which users exist.
func (f *File) Authenticate(client netip.Addr, user, password string) bool {
	now := f.now()
	key := keyOf(client, user)
	if f.isLimited(key, now) {
		f.limited.Add(1)
		f.failures.Add(1)
		f.logFailure(client, user, "rate limited")
		return false
	}
	tab := f.table()
	e, ok := tab.users[user]
	if ok {
		ck := cacheKey(user, password, e.hash)
		if f.cached(ck, now) {
			f.cacheHits.Add(1)
			return true
		}
		if f.check(e, password) {
			f.store(ck, now)
			return true
		}
	} else {
		f.check(dummyEntry(tab.common), password)
	}
	f.failures.Add(1)
	f.fail(key, now)
	reason := "wrong password"
	if !ok {
		reason = "unknown user"
	}
	f.logFailure(client, user, reason)
	return false
}

// check runs one password check, waiting for a free slot first.
func (f *File) check(e entry, password string) bool {
	checkSlots <- struct{}{}
	defer func() { <-checkSlots }()
	f.verifications.Add(1)
	if f.compare != nil {
		return f.compare(e, password)
	}
	if e.match != nil {
		return e.match(password)
	}
	return bcrypt.CompareHashAndPassword([]byte(e.hash), []byte(password)) == nil
}

// limitKey is whose failures count together: one user name from one
// client network. The name is hashed so that a key has a fixed size
// whatever the client sends.
type limitKey struct {
	client netip.Prefix
	user   [sha256.Size]byte
}

// keyOf keys an IPv4 client (or an IPv4-mapped IPv6 one) by its address
// and an IPv6 client by its /64, which a single host or site usually holds
// whole: keying by the address would give it 2^64 allowances.
func keyOf(client netip.Addr, user string) limitKey {
	client = client.Unmap()
	bits := 32
	if client.Is6() {
		bits = 64
	}
	p, _ := client.Prefix(bits) // the zero Prefix for an invalid address
	return limitKey{client: p, user: sha256.Sum256([]byte(user))}
}

func (f *File) now() time.Time {
	if f.Now != nil {
		return f.Now()
	}
	return time.Now()
}

func (f *File) logFailure(client netip.Addr, user, reason string) {
	if f.Logger != nil {
		f.Logger.Warn("authentication failed", "user", user, "client", client.String(), "reason", reason)
	}
}

// cacheKey keys a successful verification. It is as fast to guess from as
// the weakest stored hashes, but it stays in memory and, holding the stored
// hash, dies with a password change.
func cacheKey(user, password, hash string) [sha256.Size]byte {
	h := sha256.New()
	io.WriteString(h, user)
	h.Write([]byte{0})
	io.WriteString(h, password)
	h.Write([]byte{0})
	io.WriteString(h, hash)
	return [sha256.Size]byte(h.Sum(nil))
}

func (f *File) cached(key [sha256.Size]byte, now time.Time) bool {
	f.cacheMu.Lock()
	defer f.cacheMu.Unlock()
	exp, ok := f.cache[key]
	if ok && now.Before(exp) {
		return true
	}
	if ok {
		delete(f.cache, key)
	}
	return false
}

func (f *File) store(key [sha256.Size]byte, now time.Time) {
	ttl := f.CacheTTL
	if ttl <= 0 {
		ttl = DefaultCacheTTL
	}
	f.cacheMu.Lock()
	defer f.cacheMu.Unlock()
	if f.cache == nil {
		f.cache = make(map[[sha256.Size]byte]time.Time)
	}
	if len(f.cache) >= maxCache {
		for k, exp := range f.cache {
			if !now.Before(exp) {
				delete(f.cache, k)
			}
		}
		for k := range f.cache { // still full: forget arbitrary entries
			if len(f.cache) < maxCache {
				break
			}
			delete(f.cache, k)
		}
	}
	f.cache[key] = now.Add(ttl)
}

func (f *File) burst() int {
	if f.FailureBurst > 0 {
		return f.FailureBurst
	}
	return DefaultFailureBurst
}

func (f *File) isLimited(key limitKey, now time.Time) bool {
	return f.lim.isLimited(key, now)
}

// fail takes one attempt from the pair's allowance.
func (f *File) fail(key limitKey, now time.Time) {
	f.lim.fail(key, now, f.burst(), f.FailureEvery)
}

// limiters holds the failure allowance of each (client, user) pair, at
// most maxLimiters of them. Its zero value is ready to use.
type limiters struct {
	mu sync.Mutex
	m  map[limitKey]*rate.Limiter
}

func (ls *limiters) isLimited(key limitKey, now time.Time) bool {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	l, ok := ls.m[key]
	return ok && l.TokensAt(now) < 1
}

// fail takes one attempt from the pair's allowance of burst attempts, of
// which one comes back every `every` (zero: DefaultFailureEvery).
func (ls *limiters) fail(key limitKey, now time.Time, burst int, every time.Duration) {
	if every <= 0 {
		every = DefaultFailureEvery
	}
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.m == nil {
		ls.m = make(map[limitKey]*rate.Limiter)
	}
	l, ok := ls.m[key]
	if !ok {
		if len(ls.m) >= maxLimiters {
			for k, l := range ls.m { // forget pairs that have recovered
				if l.TokensAt(now) >= float64(l.Burst()) {
					delete(ls.m, k)
				}
			}
			for k := range ls.m { // still full: forget arbitrary pairs
				if len(ls.m) < maxLimiters {
					break
				}
				delete(ls.m, k)
			}
		}
		l = rate.NewLimiter(rate.Every(every), burst)
		ls.m[key] = l
	}
	l.AllowN(now, 1)
}

// dummyPassword is what the dummy entries hash; no password is compared
// successfully against them on purpose, their result is ignored.
const dummyPassword = "sluice: no such user"

var (
	dummyOnce    sync.Once
	dummyEntries map[Kind]entry
)

// dummyEntry is checked against for unknown users: an entry of kind k, so
// that an unknown user costs what a known one of that kind does.
func dummyEntry(k Kind) entry {
	dummyOnce.Do(func() {
		b, _ := bcrypt.GenerateFromPassword([]byte(dummyPassword), Cost)
		dummyEntries = make(map[Kind]entry)
		for kind, h := range map[Kind]string{
			Bcrypt:   string(b),
			SHACrypt: "$6$sluicesalt$" + strings.Repeat("0", 86),
			MD5:      "$apr1$sluice$" + strings.Repeat("0", 22),
			SHA1:     "{SHA}AAAAAAAAAAAAAAAAAAAAAAAAAAA=",
			DES:      "sl00000000000",
		} {
			e, err := parseHash(h)
			if err != nil {
				panic("auth: dummy " + kind.String() + ": " + err.Error())
			}
			dummyEntries[kind] = e
		}
	})
	if e, ok := dummyEntries[k]; ok {
		return e
	}
	return dummyEntries[Bcrypt]
}

// table is what one reading of the file produced.
type table struct {
	users    map[string]entry
	order    []string
	warnings []error
	common   Kind // the most common kind, for unknown users
}

// parseLine parses one htpasswd line. ok is false for blank lines and
// comments. An error holds the user name, never the hash.
func parseLine(line string) (user string, e entry, ok bool, err error) {
	line = strings.TrimRight(line, "\r")
	t := strings.TrimSpace(line)
	if t == "" || strings.HasPrefix(t, "#") {
		return "", entry{}, false, nil
	}
	user, h, found := strings.Cut(t, ":")
	if !found {
		return "", entry{}, false, ErrSyntax
	}
	if err := checkUser(user); err != nil {
		return "", entry{}, false, err
	}
	e, err = parseHash(strings.TrimSpace(h))
	if err != nil {
		return "", entry{}, false, fmt.Errorf("user %s: %w", user, err)
	}
	return user, e, true, nil
}

func checkUser(user string) error {
	if user == "" || strings.HasPrefix(user, "#") || strings.ContainsRune(user, ':') {
		return ErrUserName
	}
	for _, r := range user {
		if r < ' ' || r == 0x7f || r == ' ' || r == '\t' {
			return ErrUserName
		}
	}
	return nil
}

// readFile reads path into a table. Only a file that cannot be read is an
// error; bad lines are skipped and become warnings.
func readFile(path string) (*table, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	tab := &table{users: make(map[string]entry)}
	dup := make(map[string]bool)
	bad := 0
	warn := func(n int, err error) {
		if bad++; bad <= maxWarnings {
			tab.warnings = append(tab.warnings, &ParseError{File: path, Line: n, Err: err})
		}
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	n := 1
	for ; sc.Scan(); n++ {
		user, e, ok, err := parseLine(sc.Text())
		switch {
		case err != nil:
			warn(n, err)
		case !ok:
		case dup[user]:
			warn(n, fmt.Errorf("user %s: %w", user, ErrDuplicate))
		default:
			if _, seen := tab.users[user]; seen {
				warn(n, fmt.Errorf("user %s: %w", user, ErrDuplicate))
				dup[user] = true
				delete(tab.users, user)
				continue
			}
			tab.users[user] = e
			tab.order = append(tab.order, user)
		}
	}
	if err := sc.Err(); err != nil { // a line over 1 MiB: nothing after it is read
		warn(n, fmt.Errorf("auth: %w; the rest of the file is skipped", err))
	}
	if bad > maxWarnings {
		tab.warnings = append(tab.warnings, &ParseError{File: path, Line: n,
			Err: fmt.Errorf("auth: %d more bad lines not listed", bad-maxWarnings)})
	}
	tab.order = slices.DeleteFunc(tab.order, func(u string) bool { return dup[u] })
	count := make(map[Kind]int)
	for _, e := range tab.users {
		count[e.kind]++
	}
	tab.common = Bcrypt
	for k := Bcrypt; k <= DES; k++ {
		if count[k] > count[tab.common] {
			tab.common = k
		}
	}
	return tab, nil
}
