package auth

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"strings"

	gohtpasswd "github.com/tg123/go-htpasswd"
	"golang.org/x/crypto/bcrypt"
)

// Kind is the hash algorithm of one htpasswd line.
type Kind int

// The hash kinds an htpasswd file may hold, as Squid's basic_ncsa_auth and
// Apache's htpasswd write them.
const (
	// Bcrypt is "$2y$", "$2a$" or "$2b$" (`htpasswd -B`, `sluice users add`).
	Bcrypt Kind = iota + 1
	// SHACrypt is SHA-256 "$5$" or SHA-512 "$6$" crypt (`htpasswd -2`, `-5`).
	SHACrypt
	// MD5 is Apache's "$apr1$" (`htpasswd -m`, its default) or md5crypt "$1$".
	MD5
	// SHA1 is "{SHA}" and base64 of an unsalted SHA-1 (`htpasswd -s`).
	SHA1
	// DES is the traditional 13-character crypt(3) (`htpasswd -d`); it uses
	// only the first 8 bytes of a password.
	DES
)

// String names the kind as `sluice users list` shows it.
func (k Kind) String() string {
	switch k {
	case Bcrypt:
		return "bcrypt"
	case SHACrypt:
		return "sha-crypt"
	case MD5:
		return "md5"
	case SHA1:
		return "sha1"
	case DES:
		return "des"
	}
	return "unknown"
}

// Weak reports whether the kind is fast enough to guess offline (MD5,
// SHA-1, DES): such a user should be given a new password with `sluice
// users add`, which writes bcrypt.
func (k Kind) Weak() bool { return k == MD5 || k == SHA1 || k == DES }

var (
	// ErrHashKind means a line holds a hash of no kind Sluice verifies
	// (plain text, {SSHA}, argon2, ...).
	ErrHashKind = errors.New("auth: unsupported hash kind (bcrypt, $5$/$6$, $apr1$/$1$, {SHA} and crypt DES are read)")
	// ErrHash means a line's hash has a known prefix but is malformed.
	ErrHash = errors.New("auth: malformed hash")
)

// entry is one user's stored hash.
type entry struct {
	kind Kind
	hash string
	// match checks a password; nil for bcrypt, which File.check runs itself
	// (through its test hook).
	match func(password string) bool
}

// parseHash recognises the kind of an htpasswd hash and checks its shape.
// The error never holds the hash.
func parseHash(h string) (entry, error) {
	e := entry{hash: h}
	var (
		p   gohtpasswd.EncodedPasswd
		err error
	)
	switch {
	case strings.HasPrefix(h, "$2y$"), strings.HasPrefix(h, "$2a$"), strings.HasPrefix(h, "$2b$"):
		e.kind = Bcrypt
		if _, err := bcrypt.Cost([]byte(h)); err != nil || len(h) != 60 {
			return entry{}, fmt.Errorf("%w: bcrypt is 60 characters", ErrHash)
		}
		return e, nil
	case strings.HasPrefix(h, "$5$"), strings.HasPrefix(h, "$6$"):
		e.kind = SHACrypt
		if !shaCryptShape(h) {
			return entry{}, fmt.Errorf("%w: sha-crypt is $5$ or $6$, [rounds=N$]salt$hash", ErrHash)
		}
		p, err = gohtpasswd.AcceptCryptSha(h)
	case strings.HasPrefix(h, "$apr1$"), strings.HasPrefix(h, "$1$"):
		e.kind = MD5
		if !md5Shape(h) {
			return entry{}, fmt.Errorf("%w: md5 is $apr1$salt$ and 22 characters", ErrHash)
		}
		p, err = gohtpasswd.AcceptMd5(h)
	case strings.HasPrefix(h, "{SHA}"):
		e.kind = SHA1
		p, err = gohtpasswd.AcceptSha(h)
		if err != nil {
			return entry{}, fmt.Errorf("%w: {SHA} is followed by 28 characters of base64", ErrHash)
		}
	case isDESHash(h):
		e.kind = DES
		salt := h[:2]
		e.match = func(pw string) bool { return constantTimeEqual(desCrypt(pw, salt), h) }
		return e, nil
	default:
		return entry{}, ErrHashKind
	}
	if err != nil || p == nil {
		return entry{}, fmt.Errorf("%w: %s", ErrHash, e.kind)
	}
	e.match = p.MatchesPassword
	return e, nil
}

// md5Shape checks "$apr1$SALT$HASH" or "$1$SALT$HASH": a salt of 1 to 8
// characters and 22 crypt64 characters of hash.
func md5Shape(h string) bool {
	rest := strings.TrimPrefix(strings.TrimPrefix(h, "$apr1$"), "$1$")
	salt, sum, ok := strings.Cut(rest, "$")
	if !ok || salt == "" || len(salt) > 8 || len(sum) != 22 || strings.Contains(salt, "$") {
		return false
	}
	for i := range len(sum) {
		if crypt64Value(sum[i]) < 0 {
			return false
		}
	}
	return true
}

// shaCryptShape checks "$5$[rounds=N$]SALT$HASH" (43 characters of hash)
// or "$6$..." (86).
func shaCryptShape(h string) bool {
	n := 43
	if strings.HasPrefix(h, "$6$") {
		n = 86
	}
	parts := strings.Split(h[3:], "$")
	if len(parts) == 3 && strings.HasPrefix(parts[0], "rounds=") {
		parts = parts[1:]
	}
	if len(parts) != 2 || len(parts[1]) != n {
		return false
	}
	for i := range len(parts[1]) {
		if crypt64Value(parts[1][i]) < 0 {
			return false
		}
	}
	return true
}

// constantTimeEqual compares two strings without an early exit.
func constantTimeEqual(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}
