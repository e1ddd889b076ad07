package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/sluiceproxy/sluice/proxy/auth"
	"github.com/sluiceproxy/sluice/rules"
)

func init() { extraCommands = append(extraCommands, usersCmd) }

func usersCmd() *cobra.Command {
	var cfgPath, file string
	cmd := &cobra.Command{
		Use:   "users COMMAND",
		Short: "Add, remove and list proxy users (the htpasswd file of `users:`)",
		Long: `Manage the htpasswd file named by the config's users: entry (or --file).
Passwords are stored as bcrypt hashes; the file is replaced atomically with
mode 0600, and a running proxy picks the change up on its own. Files written
for Squid (htpasswd -m, -s, -d, -2, -5) are read as they are; 'list' marks
the weak hashes (MD5, SHA-1, DES), which 'add' replaces with bcrypt.`,
		Example: `  sluice users -c sluice.yaml add alice
  echo "$PASSWORD" | sluice users -c sluice.yaml add bob --password-stdin
  sluice users --file /etc/sluice/users list`,
		Args: groupArgs,
		RunE: groupRun,
	}
	pf := cmd.PersistentFlags()
	pf.StringVarP(&cfgPath, "config", "c", "", "config file whose users: entry names the htpasswd file")
	pf.StringVarP(&file, "file", "f", "", "htpasswd file (instead of the config's users:)")
	path := func() (string, error) { return usersFile(cfgPath, file) }

	var fromStdin bool
	add := &cobra.Command{
		Use:               "add NAME [--password-stdin]",
		ValidArgsFunction: completeUsers(&cfgPath, &file),
		Short:             "Add a user, or change a user's password",
		Long: `Add a user, or change the password of an existing one. The password is
asked twice on the terminal without echo, or read from the first line of
standard input with --password-stdin. Exit status 2 when the password is
empty, too long, differs the second time or cannot be read: nothing is
changed then.`,
		Example: `  sluice users -c sluice.yaml add alice
  echo "$PASSWORD" | sluice users -c sluice.yaml add bob --password-stdin`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := path()
			if err != nil {
				return failed(err)
			}
			name := args[0]
			var pw string
			if fromStdin {
				pw, err = readPasswordLine(cmd.InOrStdin())
			} else {
				pw, err = promptPassword(cmd.InOrStdin(), cmd.ErrOrStderr(), name)
			}
			if err != nil {
				return failed(err)
			}
			before, err := listUsers(p)
			if err != nil {
				return failed(err)
			}
			if err := auth.SetPassword(p, name, pw); err != nil {
				return failed(err)
			}
			if slices.Contains(before, name) {
				fmt.Fprintf(cmd.OutOrStdout(), "changed the password of %s in %s\n", name, p)
			} else {
				fmt.Fprintf(cmd.OutOrStdout(), "added %s to %s\n", name, p)
			}
			return nil
		},
	}
	add.Flags().BoolVar(&fromStdin, "password-stdin", false, "read the password from the first line of standard input")

	rm := &cobra.Command{
		Use:               "rm NAME",
		ValidArgsFunction: completeUsers(&cfgPath, &file),
		Short:             "Remove a user",
		Long: `Remove the line of user NAME from the htpasswd file (the config's users:
entry, or --file), keeping every other line; the file is replaced
atomically with mode 0600. A running proxy picks the change up on its own
and refuses NAME's credentials from then on; connections already open are
not cut. Exit status 1 when NAME is not in the file (nothing removed), 2
when the file cannot be read or written.`,
		Example: `  sluice users -c /etc/sluice/sluice.yaml rm alice
  sluice users --file /etc/sluice/users.htpasswd rm bob`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := path()
			if err != nil {
				return failed(err)
			}
			ok, err := auth.RemoveUser(p, args[0])
			if err != nil {
				return failed(err)
			}
			if !ok {
				return negative(fmt.Errorf("no user %q in %s: nothing removed", args[0], p))
			}
			fmt.Fprintf(cmd.OutOrStdout(), "removed %s from %s\n", args[0], p)
			return nil
		},
	}

	list := &cobra.Command{
		Use:   "list",
		Short: "List the user names, one a line; weak hashes are marked",
		Long: `List the user names in file order, one a line. A user whose hash is weak
(MD5 $apr1$ or $1$, SHA-1 {SHA}, crypt DES: fast to guess from a stolen
file) is followed by its kind and "weak: re-set with sluice users add".
Lines the proxy skips (malformed, or a kind it does not read) are reported
on standard error with file and line. A missing file lists no user.`,
		Example: `  sluice users -c sluice.yaml list
  sluice users --file /etc/sluice/users.htpasswd list`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			p, err := path()
			if err != nil {
				return failed(err)
			}
			users, warnings, err := auth.ReadUsers(p)
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			if err != nil {
				return failed(err)
			}
			for _, w := range warnings {
				fmt.Fprintln(cmd.ErrOrStderr(), "warning:", describe(w))
			}
			for _, u := range users {
				if u.Kind.Weak() {
					fmt.Fprintf(cmd.OutOrStdout(), "%s\t%s, weak: re-set with sluice users add\n", u.Name, u.Kind)
					continue
				}
				fmt.Fprintln(cmd.OutOrStdout(), u.Name)
			}
			return nil
		},
	}
	cmd.AddCommand(add, rm, list)
	return cmd
}

// listUsers returns the users of the htpasswd file; a missing file has none.
func listUsers(path string) ([]string, error) {
	users, err := auth.ListUsers(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return users, err
}

// usersFile returns the htpasswd file: --file, or the config's users: path.
func usersFile(cfgPath, file string) (string, error) {
	if file != "" {
		return file, nil
	}
	if cfgPath == "" {
		return "", errors.New("give --config FILE (its users: entry names the file) or --file HTPASSWD")
	}
	cfg, err := rules.LoadConfig(cfgPath)
	if err != nil {
		return "", err
	}
	if cfg.Users == "" {
		return "", fmt.Errorf("%s has no users: entry; add `users: users.htpasswd` to it, or pass --file", cfgPath)
	}
	return cfg.Users, nil
}

// maxPasswordLen bounds a password read from stdin; bcrypt uses 72 bytes.
const maxPasswordLen = 72

// readPasswordLine reads a password from the first line of r.
func readPasswordLine(r io.Reader) (string, error) {
	line, err := bufio.NewReader(io.LimitReader(r, 4096)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("cannot read the password: %w", err)
	}
	return checkPassword(strings.TrimRight(line, "\r\n"))
}

func checkPassword(pw string) (string, error) {
	switch {
	case pw == "":
		return "", errors.New("empty password; nothing changed")
	case len(pw) > maxPasswordLen:
		return "", fmt.Errorf("password longer than %d bytes (bcrypt's limit); nothing changed", maxPasswordLen)
	}
	return pw, nil
}

// promptPassword asks for the password twice on the terminal, without echo.
func promptPassword(in io.Reader, out io.Writer, name string) (string, error) {
	f, ok := in.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return "", errors.New("standard input is not a terminal; use --password-stdin")
	}
	fd := int(f.Fd())
	fmt.Fprintf(out, "Password for %s: ", name)
	a, err := term.ReadPassword(fd)
	fmt.Fprintln(out)
	if err != nil {
		return "", fmt.Errorf("cannot read the password: %w", err)
	}
	fmt.Fprintf(out, "Again: ")
	b, err := term.ReadPassword(fd)
	fmt.Fprintln(out)
	if err != nil {
		return "", fmt.Errorf("cannot read the password: %w", err)
	}
	if string(a) != string(b) {
		return "", errors.New("the passwords differ; nothing changed")
	}
	return checkPassword(string(a))
}
