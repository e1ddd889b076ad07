package auth

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/sluiceproxy/sluice/rules"
	"golang.org/x/crypto/bcrypt"
)

// SetPassword adds user with password to the htpasswd file at path, or
// replaces the user's hash where it stands. The hash is bcrypt with cost
// 10. Other lines, comments and their order are kept. The file is written
// atomically with mode 0600 and created when missing.
func SetPassword(path, user, password string) error {
	if err := checkUser(user); err != nil {
		return fmt.Errorf("%w %q", err, user)
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(password), Cost)
	if err != nil {
		return fmt.Errorf("auth: %w", err)
	}
	lines, err := readLines(path)
	if err != nil {
		return err
	}
	entry := user + ":" + string(hash)
	replaced := false
	for i, l := range lines {
		if lineUser(l) == user {
			if replaced {
				lines[i] = "\x00" // a duplicate: drop it
				continue
			}
			lines[i], replaced = entry, true
		}
	}
	if !replaced {
		lines = append(lines, entry)
	}
	return writeLines(path, lines)
}

// RemoveUser removes user from the htpasswd file at path. It reports
// whether the user was there; the file is rewritten only then.
func RemoveUser(path, user string) (bool, error) {
	lines, err := readLines(path)
	if err != nil {
		return false, err
	}
	kept := lines[:0]
	found := false
	for _, l := range lines {
		if lineUser(l) == user {
			found = true
			continue
		}
		kept = append(kept, l)
	}
	if !found {
		return false, nil
	}
	return true, writeLines(path, kept)
}

// User is one user of an htpasswd file.
type User struct {
	// Name is the user name.
	Name string
	// Kind is the hash kind of the user's line.
	Kind Kind
}

// ReadUsers returns the users of the htpasswd file at path, in file order,
// and the lines it skipped (each a *ParseError naming file:line), as Load
// would. Only a file that cannot be read is an error.
func ReadUsers(path string) ([]User, []error, error) {
	tab, err := readFile(path)
	if err != nil {
		return nil, nil, err
	}
	users := make([]User, len(tab.order))
	for i, u := range tab.order {
		users[i] = User{Name: u, Kind: tab.users[u].kind}
	}
	return users, tab.warnings, nil
}

// ListUsers returns the names of the users of the htpasswd file at path,
// in file order. Only a file that cannot be read is an error.
func ListUsers(path string) ([]string, error) {
	tab, err := readFile(path)
	if err != nil {
		return nil, err
	}
	return tab.order, nil
}

// lineUser returns the user of an entry line, or "" for anything else.
func lineUser(line string) string {
	t := strings.TrimSpace(line)
	if t == "" || strings.HasPrefix(t, "#") {
		return ""
	}
	u, _, ok := strings.Cut(t, ":")
	if !ok {
		return ""
	}
	return u
}

// readLines returns the lines of path without their newlines; a missing
// file has none.
func readLines(path string) ([]string, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	s := strings.TrimSuffix(string(data), "\n")
	if s == "" {
		return nil, nil
	}
	return strings.Split(s, "\n"), nil
}

// writeLines writes lines to path atomically: a temporary file beside it,
// synced, mode 0600, then renamed into place. Lines "\x00" are skipped.
func writeLines(path string, lines []string) error {
	var b strings.Builder
	for _, l := range lines {
		if l == "\x00" {
			continue
		}
		b.WriteString(l)
		b.WriteByte('\n')
	}
	return rules.WriteFileAtomic(path, []byte(b.String()), 0o600)
}
