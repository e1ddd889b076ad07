package dial

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/net/publicsuffix"
)

// Isolation tells which streams an upstream may put on one circuit: Sluice
// sends each isolation identity to the route's last hop as a distinct
// user name (SOCKS5 username/password, or Proxy-Authorization for an
// http(s) hop), and Tor, with IsolateSOCKSAuth (its default), builds a
// separate circuit for each.
type Isolation uint8

const (
	// IsolateNone sends the hop's configured credentials (today's
	// behaviour): every client shares the upstream's circuits.
	IsolateNone Isolation = iota
	// IsolateClient gives each client address its own identity.
	IsolateClient
	// IsolateUser gives each authenticated user its own identity; a
	// client without a user falls back to its address.
	IsolateUser
	// IsolateDestination gives each client and destination registrable
	// domain ("example.co.uk") its own identity, like Tor Browser's
	// first-party isolation.
	IsolateDestination
)

// IsolationModes are the names ParseIsolation accepts, in order.
var IsolationModes = []string{"none", "client", "user", "destination"}

// String returns the mode's config name.
func (i Isolation) String() string {
	if int(i) < len(IsolationModes) {
		return IsolationModes[i]
	}
	return fmt.Sprintf("isolation(%d)", i)
}

// ParseIsolation reads a mode name.
func ParseIsolation(s string) (Isolation, error) {
	for i, m := range IsolationModes {
		if s == m {
			return Isolation(i), nil
		}
	}
	return 0, fmt.Errorf("dial: unknown isolation %q (want %s)", s, strings.Join(IsolationModes, ", "))
}

// IsolationPassword is the fixed password sent with every isolation user
// name: the name alone carries the identity.
const IsolationPassword = "sluice"

// IsolationKeySize is the size in bytes of an isolation key.
const IsolationKeySize = 32

// Identity is who a dial is made for, as the front ends know it. It goes
// into the dial's context with WithIdentity; only an isolating hop reads
// it. The zero value is "Sluice itself" (list downloads, health checks).
type Identity struct {
	// Client is the client's source address; invalid when unknown.
	Client netip.Addr
	// User is the authenticated user name, or "".
	User string
}

type identityKey struct{}

// WithIdentity returns ctx carrying id for the dials made with it.
func WithIdentity(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, identityKey{}, id)
}

// IdentityFrom returns the Identity in ctx, or the zero Identity.
func IdentityFrom(ctx context.Context) Identity {
	id, _ := ctx.Value(identityKey{}).(Identity)
	return id
}

// IsolationUser derives the upstream user name for id's dial to target
// (host:port or a bare host) under mode: hex of a keyed HMAC-SHA256,
// truncated to 128 bits. It never contains the client's address, user name
// or the destination, and the same inputs and key always give the same
// name. IsolateNone gives "".
func IsolationUser(key []byte, mode Isolation, id Identity, target string) string {
	if mode == IsolateNone {
		return ""
	}
	client := "-"
	if id.Client.IsValid() {
		client = id.Client.Unmap().String()
	}
	var in string
	switch mode {
	case IsolateUser:
		if id.User != "" {
			in = "user\x00" + id.User
			break
		}
		in = "client\x00" + client
	case IsolateDestination:
		in = "dest\x00" + client + "\x00" + Registrable(target)
	default:
		in = "client\x00" + client
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte(in))
	return hex.EncodeToString(m.Sum(nil)[:16])
}

// Registrable returns the registrable part of target's host (host:port or
// a bare host): "bbc.co.uk" for "news.bbc.co.uk:443". An IP literal, or a
// name without a public suffix rule, is returned lowercased as it is.
func Registrable(target string) string {
	host := target
	if h, _, err := net.SplitHostPort(target); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if _, err := netip.ParseAddr(host); err == nil {
		return host
	}
	if d, err := publicsuffix.EffectiveTLDPlusOne(host); err == nil {
		return d
	}
	return host
}

// isolator returns the credentials an isolating hop sends for a dial to
// target, from the Identity in ctx.
type isolator func(ctx context.Context, target string) *url.Userinfo

// newIsolator returns the isolator of mode with key; nil for IsolateNone.
func newIsolator(key []byte, mode Isolation) isolator {
	if mode == IsolateNone {
		return nil
	}
	key = append([]byte(nil), key...)
	return func(ctx context.Context, target string) *url.Userinfo {
		return url.UserPassword(IsolationUser(key, mode, IdentityFrom(ctx), target), IsolationPassword)
	}
}

// ErrIsolationKey means the isolation key file cannot be used.
var ErrIsolationKey = errors.New("dial: bad isolation key")

// LoadIsolationKey reads the isolation key at path, creating it (0600, in
// a directory created 0700) with IsolationKeySize random bytes when it does
// not exist, so that identities survive restarts. A file of another size,
// or one readable by others, is an error: Sluice never replaces a key.
func LoadIsolationKey(path string) ([]byte, error) {
	if b, err := readKey(path); !errors.Is(err, fs.ErrNotExist) {
		return b, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrIsolationKey, err)
	}
	key := make([]byte, IsolationKeySize)
	rand.Read(key)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return readKey(path) // another process made it first
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrIsolationKey, err)
	}
	_, werr := f.Write(key)
	if err := errors.Join(werr, f.Sync(), f.Close()); err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("%w: writing %s: %w", ErrIsolationKey, path, err)
	}
	return key, nil
}

// ReadIsolationKey reads the isolation key at path as LoadIsolationKey
// does, but never creates it: a missing file is an error wrapping
// fs.ErrNotExist. It is for commands that must not leave a key behind
// (one owned by the wrong user would stop the server).
func ReadIsolationKey(path string) ([]byte, error) { return readKey(path) }

func readKey(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %w", ErrIsolationKey, err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s is readable by others (mode %v; want 0600)", ErrIsolationKey, path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrIsolationKey, err)
	}
	if len(b) != IsolationKeySize {
		return nil, fmt.Errorf("%w: %s holds %d bytes, want %d", ErrIsolationKey, path, len(b), IsolationKeySize)
	}
	return b, nil
}

// isolates reports whether rt, or any route its failover list reaches,
// isolates identities. depth bounds the walk (NewRouter refused cycles).
func (r *Router) isolates(rt *route, depth int) bool {
	if rt == nil || depth > len(r.routes) {
		return false
	}
	if rt.isolate != IsolateNone {
		return true
	}
	for _, m := range rt.failover {
		if mrt, _ := r.lookup(m); r.isolates(mrt, depth+1) {
			return true
		}
	}
	return false
}

// Isolation returns route's isolation mode and the user name its last hop
// would send for id's dial to target ("" when the route does not isolate,
// or is a failover list or direct). Route "" is the default route.
func (r *Router) Isolation(route string, id Identity, target string) (Isolation, string) {
	rt, ok := r.lookup(route)
	if !ok || rt == nil || rt.isolate == IsolateNone {
		return IsolateNone, ""
	}
	return rt.isolate, IsolationUser(r.key, rt.isolate, id, target)
}

// maxIdentityTransports bounds the per-identity Transports of one route;
// past it, one is dropped (its idle connections closed) for each new one.
const maxIdentityTransports = 256

// isoTransport is an isolating route's RoundTripper: each identity gets
// its own *http.Transport, so a pooled connection, dialed with one
// identity's credentials, never carries another identity's request. (A
// Transport with keep-alives off would do too, but it adds "Connection:
// close" to every request: a header the client did not send.)
type isoTransport struct {
	r  *Router
	rt *route
}

// RoundTrip sends req on the Transport of the identity in its context.
func (t isoTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	id := IdentityFrom(req.Context())
	rt := t.rt
	rt.tmu.Lock()
	tr, ok := rt.itr[id]
	if !ok {
		if rt.itr == nil {
			rt.itr = map[Identity]*http.Transport{}
		}
		if len(rt.itr) >= maxIdentityTransports {
			for k, old := range rt.itr {
				old.CloseIdleConnections()
				delete(rt.itr, k)
				break
			}
		}
		tr = t.r.newTransport(rt)
		rt.itr[id] = tr
	}
	rt.tmu.Unlock()
	return tr.RoundTrip(req)
}
