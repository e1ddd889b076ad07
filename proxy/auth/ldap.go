package auth

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// DirectoryConfig says how to reach a directory and find users in it.
type DirectoryConfig struct {
	// URL is ldap://HOST:PORT or ldaps://HOST:PORT.
	URL string
	// BindDN and BindPassword are the service account that searches for
	// users. An empty BindDN searches anonymously.
	BindDN, BindPassword string
	// BaseDN is where users are searched (whole subtree).
	BaseDN string
	// UserFilter finds a user; {user} is replaced by the escaped name.
	UserFilter string
	// GroupAttribute is the user entry's attribute holding its groups' DNs.
	GroupAttribute string
	// Groups maps a Sluice group name to a directory group DN.
	Groups map[string]string
	// TLS verifies the server for ldaps:// and StartTLS. Nil: the system's
	// roots and the URL's host name.
	TLS *tls.Config
	// StartTLS upgrades an ldap:// connection before any bind.
	StartTLS bool
	// Timeout bounds each connection and operation. Zero means 10 s.
	Timeout time.Duration
}

// TLSConfig returns a TLS config that trusts the CA certificates of pem.
func TLSConfig(pem []byte) (*tls.Config, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, errors.New("no PEM certificate found")
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// ErrDirectory means the directory could not be asked (unreachable, TLS,
// service bind or search refused). The credentials are then rejected.
var ErrDirectory = errors.New("auth: directory unavailable")

// Directory checks credentials against an LDAP directory (OpenLDAP,
// Active Directory): it searches the user's entry with the service
// account, then binds as that entry with the password, and maps the
// entry's group DNs to Sluice group names. It never accepts an empty
// password (an LDAP bind with one is an anonymous bind, which succeeds).
//
// Successful checks are cached for CacheTTL, keyed by a hash of user and
// password, at most 4096 of them; failures are limited per (client, user)
// as File does. When the directory cannot be asked, the credentials are
// rejected and a line is logged: a directory outage never opens the proxy.
// It is safe for concurrent use; its exported fields must be set before
// the first Authenticate.
type Directory struct {
	// Logger gets one line per failed attempt and per directory error
	// (user and client, never the password). If nil, nothing is logged.
	Logger *slog.Logger
	// CacheTTL is how long a successful check is cached. Zero means 5 min.
	CacheTTL time.Duration
	// FailureBurst and FailureEvery limit failed attempts as File's do.
	FailureBurst int
	FailureEvery time.Duration
	// Now returns the current time. If nil, time.Now.
	Now func() time.Time

	cfg    DirectoryConfig
	groups map[string]*ldap.DN // Sluice name → parsed DN

	cacheMu sync.Mutex
	cache   map[[sha256.Size]byte]dirEntry

	lim   limiters
	slots chan struct{}

	binds, cacheHits, limited, failures, outages atomic.Int64
}

type dirEntry struct {
	exp    time.Time
	groups []string
}

// maxDirectoryChecks bounds the directory checks running at once.
const maxDirectoryChecks = 16

// NewDirectory checks cfg and returns a Directory. It does not connect.
func NewDirectory(cfg DirectoryConfig) (*Directory, error) {
	if cfg.UserFilter == "" {
		cfg.UserFilter = "(uid={user})"
	}
	if cfg.GroupAttribute == "" {
		cfg.GroupAttribute = "memberOf"
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if _, err := ldap.CompileFilter(strings.ReplaceAll(cfg.UserFilter, "{user}", "x")); err != nil {
		return nil, fmt.Errorf("auth: user_filter %q: %w", cfg.UserFilter, err)
	}
	d := &Directory{cfg: cfg, groups: make(map[string]*ldap.DN, len(cfg.Groups)),
		cache: make(map[[sha256.Size]byte]dirEntry), slots: make(chan struct{}, maxDirectoryChecks)}
	for name, dn := range cfg.Groups {
		p, err := ldap.ParseDN(dn)
		if err != nil {
			return nil, fmt.Errorf("auth: group %s: DN %q: %w", name, dn, err)
		}
		d.groups[name] = p
	}
	return d, nil
}

// DirectoryStats counts what a Directory did.
type DirectoryStats struct {
	// Binds counts user binds attempted.
	Binds int64
	// CacheHits counts attempts answered from the cache.
	CacheHits int64
	// Limited counts attempts rejected by the rate limit without asking.
	Limited int64
	// Failures counts rejected attempts, limited ones and outages included.
	Failures int64
	// Outages counts attempts rejected because the directory could not be asked.
	Outages int64
}

// Stats returns the counters.
func (d *Directory) Stats() DirectoryStats {
	return DirectoryStats{Binds: d.binds.Load(), CacheHits: d.cacheHits.Load(), Limited: d.limited.Load(),
		Failures: d.failures.Load(), Outages: d.outages.Load()}
}

// Authenticate reports whether password is user's in the directory and,
// if so, the user's groups (the sorted Sluice names of the configured
// groups the entry lists). A limited (client, user) pair is rejected
// without asking.
func (d *Directory) Authenticate(client netip.Addr, user, password string) ([]string, bool) {
	now := d.now()
	key := keyOf(client, user)
	if d.lim.isLimited(key, now) {
		d.limited.Add(1)
		d.failures.Add(1)
		d.logFailure(client, user, "rate limited")
		return nil, false
	}
	if user == "" || password == "" {
		d.reject(key, client, user, "empty user name or password", now)
		return nil, false
	}
	ck := dirCacheKey(user, password)
	if groups, ok := d.cached(ck, now); ok {
		d.cacheHits.Add(1)
		return groups, true
	}
	groups, err := d.check(user, password)
	switch {
	case err == nil:
		d.store(ck, groups, now)
		return groups, true
	case errors.Is(err, ErrDirectory):
		// Not the user's fault: not counted against the pair's allowance.
		d.outages.Add(1)
		d.failures.Add(1)
		if d.Logger != nil {
			d.Logger.Error("directory unavailable: credentials rejected", "user", user, "client", client.String(),
				"url", d.cfg.URL, "err", err)
		}
		return nil, false
	default:
		d.reject(key, client, user, err.Error(), now)
		return nil, false
	}
}

func (d *Directory) reject(key limitKey, client netip.Addr, user, reason string, now time.Time) {
	d.failures.Add(1)
	burst := d.FailureBurst
	if burst <= 0 {
		burst = DefaultFailureBurst
	}
	d.lim.fail(key, now, burst, d.FailureEvery)
	d.logFailure(client, user, reason)
}

var (
	errUnknownUser = errors.New("unknown user")
	errAmbiguous   = errors.New("user filter matches several entries")
	errPassword    = errors.New("wrong password")
)

// check asks the directory. An error wrapping ErrDirectory means it could
// not; other errors say why the credentials are wrong.
func (d *Directory) check(user, password string) ([]string, error) {
	d.slots <- struct{}{}
	defer func() { <-d.slots }()
	c, err := d.dial()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrDirectory, err)
	}
	defer c.Close()
	if d.cfg.BindDN != "" {
		if err := c.Bind(d.cfg.BindDN, d.cfg.BindPassword); err != nil {
			return nil, fmt.Errorf("%w: service bind as %s: %v", ErrDirectory, d.cfg.BindDN, err)
		}
	}
	filter := strings.ReplaceAll(d.cfg.UserFilter, "{user}", ldap.EscapeFilter(user))
	res, err := c.Search(ldap.NewSearchRequest(d.cfg.BaseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases,
		2, int(d.cfg.Timeout/time.Second), false, filter, []string{d.cfg.GroupAttribute}, nil))
	if err != nil && !ldap.IsErrorWithCode(err, ldap.LDAPResultSizeLimitExceeded) {
		return nil, fmt.Errorf("%w: search: %v", ErrDirectory, err)
	}
	switch {
	case res == nil || len(res.Entries) == 0:
		return nil, errUnknownUser
	case len(res.Entries) > 1:
		return nil, errAmbiguous
	}
	e := res.Entries[0]
	d.binds.Add(1)
	if err := c.Bind(e.DN, password); err != nil {
		if ldap.IsErrorWithCode(err, ldap.LDAPResultInvalidCredentials) {
			return nil, errPassword
		}
		return nil, fmt.Errorf("%w: bind as the user: %v", ErrDirectory, err)
	}
	return d.mapGroups(e.GetEqualFoldAttributeValues(d.cfg.GroupAttribute)), nil
}

func (d *Directory) dial() (*ldap.Conn, error) {
	nd := &net.Dialer{Timeout: d.cfg.Timeout}
	opts := []ldap.DialOpt{ldap.DialWithDialer(nd)}
	if d.cfg.TLS != nil {
		opts = append(opts, ldap.DialWithTLSConfig(d.cfg.TLS))
	}
	c, err := ldap.DialURL(d.cfg.URL, opts...)
	if err != nil {
		return nil, err
	}
	c.SetTimeout(d.cfg.Timeout)
	if d.cfg.StartTLS {
		tc := d.cfg.TLS
		if tc == nil {
			tc = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		tc = tc.Clone()
		if tc.ServerName == "" {
			if u, err := url.Parse(d.cfg.URL); err == nil {
				tc.ServerName = u.Hostname()
			}
		}
		if err := c.StartTLS(tc); err != nil {
			c.Close()
			return nil, fmt.Errorf("starttls: %w", err)
		}
	}
	return c, nil
}

// mapGroups returns the Sluice names of the configured groups among dns.
func (d *Directory) mapGroups(dns []string) []string {
	var out []string
	for _, s := range dns {
		dn, err := ldap.ParseDN(s)
		if err != nil {
			continue
		}
		for name, g := range d.groups {
			if g.EqualFold(dn) {
				out = append(out, name)
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func (d *Directory) now() time.Time {
	if d.Now != nil {
		return d.Now()
	}
	return time.Now()
}

func (d *Directory) logFailure(client netip.Addr, user, reason string) {
	if d.Logger != nil {
		d.Logger.Warn("authentication failed", "user", user, "client", client.String(), "reason", reason,
			"source", "directory")
	}
}

func dirCacheKey(user, password string) [sha256.Size]byte {
	h := sha256.New()
	io.WriteString(h, "ldap\x00")
	io.WriteString(h, user)
	h.Write([]byte{0})
	io.WriteString(h, password)
	return [sha256.Size]byte(h.Sum(nil))
}

func (d *Directory) cached(key [sha256.Size]byte, now time.Time) ([]string, bool) {
	d.cacheMu.Lock()
	defer d.cacheMu.Unlock()
	e, ok := d.cache[key]
	if ok && now.Before(e.exp) {
		return e.groups, true
	}
	if ok {
		delete(d.cache, key)
	}
	return nil, false
}

func (d *Directory) store(key [sha256.Size]byte, groups []string, now time.Time) {
	ttl := d.CacheTTL
	if ttl <= 0 {
		ttl = DefaultCacheTTL
	}
	d.cacheMu.Lock()
	defer d.cacheMu.Unlock()
	if len(d.cache) >= maxCache {
		for k, e := range d.cache {
			if !now.Before(e.exp) {
				delete(d.cache, k)
			}
		}
		for k := range d.cache {
			if len(d.cache) < maxCache {
				break
			}
			delete(d.cache, k)
		}
	}
	d.cache[key] = dirEntry{exp: now.Add(ttl), groups: groups}
}
