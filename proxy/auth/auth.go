// Package auth checks proxy users against an htpasswd file with bcrypt
// hashes, as written by `htpasswd -B`. Both front ends use it: HTTP with
// Proxy-Authorization: Basic, SOCKS5 with RFC 1929.
//
// bcrypt costs tens of milliseconds per check, so successful verifications
// are cached for a short time, keyed by a hash of user, password and stored
// hash. Failed attempts are rate limited per (client, user name), the
// client being its IPv4 address or its IPv6 /64: a limited pair is rejected
// without running bcrypt, and other users behind the same address (a NAT)
// are not affected. At most one bcrypt comparison per CPU runs at once.
// Passwords are never logged.
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

// bcryptSlots bounds the bcrypt comparisons running at once in the
// process, whatever the number of Files: each costs tens of milliseconds
// of one CPU, and a flood of attempts with ever new user names (each pair
// has its own allowance) must queue rather than starve the proxy.
var bcryptSlots = make(chan struct{}, runtime.NumCPU())

var (
	// ErrHashKind means a line holds a hash other than bcrypt.
	ErrHashKind = errors.New("auth: unsupported hash: only bcrypt ($2y$, $2a$, $2b$) is accepted; write it with `htpasswd -B`")
	// ErrSyntax means a line is not "user:hash".
	ErrSyntax = errors.New("auth: line is not user:hash")
	// ErrDuplicate means a user appears on two lines.
	ErrDuplicate = errors.New("auth: duplicate user")
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

// Error renders "file:line: problem".
func (e *ParseError) Error() string { return fmt.Sprintf("%s:%d: %v", e.File, e.Line, e.Err) }

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

	mu    sync.RWMutex
	users map[string][]byte
	order []string

	cacheMu sync.Mutex
	cache   map[[sha256.Size]byte]time.Time // key → expiry

	limMu    sync.Mutex
	limiters map[limitKey]*rate.Limiter

	// compare checks a password against a bcrypt hash; nil means
	// bcrypt.CompareHashAndPassword (tests count concurrent runs).
	compare func(hash, password []byte) error

	verifications, cacheHits, limited, failures atomic.Int64
}

// Stats counts what a File did since it was loaded.
type Stats struct {
	// Verifications counts bcrypt comparisons run.
	Verifications int64
	// CacheHits counts attempts answered from the cache.
	CacheHits int64
	// Limited counts attempts rejected by the rate limit without bcrypt.
	Limited int64
	// Failures counts rejected attempts, limited ones included.
	Failures int64
}

// Load reads an htpasswd file with bcrypt hashes. A line with another hash
// kind, a malformed line or a duplicate user is an error naming file:line.
// Blank lines and lines starting with '#' are ignored.
func Load(path string) (*File, error) {
	users, order, err := readFile(path)
	if err != nil {
		return nil, err
	}
	return &File{path: path, users: users, order: order,
		cache: make(map[[sha256.Size]byte]time.Time), limiters: make(map[limitKey]*rate.Limiter)}, nil
}

// Reload re-reads the file. On error the old users stay and the error is returned.
func (f *File) Reload() error {
	users, order, err := readFile(f.path)
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.users, f.order = users, order
	f.mu.Unlock()
	return nil
}

// Users returns the user names in file order.
func (f *File) Users() []string {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return slices.Clone(f.order)
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
// that failed too often is rejected without running bcrypt, even with the
// right password, until it regains an attempt; the same user from another
// client, and other users from the same client, are not affected. Clients
// are keyed by their IPv4 address or their IPv6 /64. An unknown user costs
// one bcrypt run too, so that timing does not tell which users exist.
func (f *File) Authenticate(client netip.Addr, user, password string) bool {
	now := f.now()
	key := keyOf(client, user)
	if f.isLimited(key, now) {
		f.limited.Add(1)
		f.failures.Add(1)
		f.logFailure(client, user, "rate limited")
		return false
	}
	f.mu.RLock()
	hash, ok := f.users[user]
	f.mu.RUnlock()
	if ok {
		ck := cacheKey(user, password, hash)
		if f.cached(ck, now) {
			f.cacheHits.Add(1)
			return true
		}
		if f.check(hash, password) {
			f.store(ck, now)
			return true
		}
	} else {
		f.check(dummyHash(), password)
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

// check runs one bcrypt comparison, waiting for a free slot first.
func (f *File) check(hash []byte, password string) bool {
	bcryptSlots <- struct{}{}
	defer func() { <-bcryptSlots }()
	f.verifications.Add(1)
	compare := f.compare
	if compare == nil {
		compare = bcrypt.CompareHashAndPassword
	}
	return compare(hash, []byte(password)) == nil
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

func cacheKey(user, password string, hash []byte) [sha256.Size]byte {
	h := sha256.New()
	io.WriteString(h, user)
	h.Write([]byte{0})
	io.WriteString(h, password)
	h.Write([]byte{0})
	h.Write(hash)
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
	f.limMu.Lock()
	defer f.limMu.Unlock()
	l, ok := f.limiters[key]
	return ok && l.TokensAt(now) < 1
}

// fail takes one attempt from the pair's allowance.
func (f *File) fail(key limitKey, now time.Time) {
	every := f.FailureEvery
	if every <= 0 {
		every = DefaultFailureEvery
	}
	f.limMu.Lock()
	defer f.limMu.Unlock()
	if f.limiters == nil {
		f.limiters = make(map[limitKey]*rate.Limiter)
	}
	l, ok := f.limiters[key]
	if !ok {
		if len(f.limiters) >= maxLimiters {
			for k, l := range f.limiters { // forget pairs that have recovered
				if l.TokensAt(now) >= float64(l.Burst()) {
					delete(f.limiters, k)
				}
			}
			for k := range f.limiters { // still full: forget arbitrary pairs
				if len(f.limiters) < maxLimiters {
					break
				}
				delete(f.limiters, k)
			}
		}
		l = rate.NewLimiter(rate.Every(every), f.burst())
		f.limiters[key] = l
	}
	l.AllowN(now, 1)
}

var (
	dummyOnce sync.Once
	dummy     []byte
)

// dummyHash is compared against for unknown users.
func dummyHash() []byte {
	dummyOnce.Do(func() {
		dummy, _ = bcrypt.GenerateFromPassword([]byte("sluice: no such user"), Cost)
	})
	return dummy
}

// parseLine parses one htpasswd line. entry is false for blank lines and comments.
func parseLine(line string) (user string, hash []byte, entry bool, err error) {
	line = strings.TrimRight(line, "\r")
	t := strings.TrimSpace(line)
	if t == "" || strings.HasPrefix(t, "#") {
		return "", nil, false, nil
	}
	user, h, ok := strings.Cut(t, ":")
	if !ok {
		return "", nil, false, ErrSyntax
	}
	if err := checkUser(user); err != nil {
		return "", nil, false, err
	}
	h = strings.TrimSpace(h)
	if !strings.HasPrefix(h, "$2y$") && !strings.HasPrefix(h, "$2a$") && !strings.HasPrefix(h, "$2b$") {
		return "", nil, false, ErrHashKind
	}
	if _, err := bcrypt.Cost([]byte(h)); err != nil {
		return "", nil, false, fmt.Errorf("auth: malformed bcrypt hash: %w", err)
	}
	return user, []byte(h), true, nil
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

func readFile(path string) (map[string][]byte, []string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("auth: %w", err)
	}
	users := make(map[string][]byte)
	var order []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for n := 1; sc.Scan(); n++ {
		user, hash, entry, err := parseLine(sc.Text())
		if err != nil {
			return nil, nil, &ParseError{File: path, Line: n, Err: err}
		}
		if !entry {
			continue
		}
		if _, dup := users[user]; dup {
			return nil, nil, &ParseError{File: path, Line: n, Err: ErrDuplicate}
		}
		users[user] = hash
		order = append(order, user)
	}
	if err := sc.Err(); err != nil {
		return nil, nil, fmt.Errorf("auth: %s: %w", path, err)
	}
	return users, order, nil
}
