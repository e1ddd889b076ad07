package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/url"
	"os"
	"regexp"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// How a command fails, for every command alike:
//
//   - The exit status is 0 when the command did what was asked; 1 for
//     nothing to do or a negative answer (blocked, not found, nothing
//     removed, a source the command reports as unusable); 2 for an error
//     (a wrong command line, an invalid config, an I/O failure).
//   - The message is one line on standard error, "sluice: " then what
//     failed in the user's terms, with the file:line when there is one and
//     a hint when there is an obvious fix. A wrong command line adds the
//     command's usage line.
//
// Errors of the library packages start with the package's name and wrap
// Go's own errors (*fs.PathError, *net.OpError), which repeat the step
// and the address; describe renders such a chain so that it reads once.

// exitError carries a process exit status through cobra. err is printed
// as one line; a nil err prints nothing (the command said it already).
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

// failed is an error: exit status 2.
func failed(err error) error { return &exitError{code: 2, err: err} }

// negative is a negative answer or nothing to do: exit status 1, with err
// as the message (nil for none).
func negative(err error) error { return &exitError{code: 1, err: err} }

// usageError is a wrong command line: the message, then the usage line of
// cmd; exit status 2.
type usageError struct {
	cmd *cobra.Command
	msg string
}

func (e *usageError) Error() string { return e.msg }

func usagef(cmd *cobra.Command, format string, a ...any) error {
	return &usageError{cmd: cmd, msg: fmt.Sprintf(format, a...)}
}

// report writes err for people to w and returns the exit status.
func report(w io.Writer, err error) int {
	if err == nil {
		return 0
	}
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintln(w, "sluice:", ue.msg)
		fmt.Fprintln(w, "usage:", usageLine(ue.cmd))
		return 2
	}
	if msg := err.Error(); strings.HasPrefix(msg, "unknown command ") {
		// cobra's own: `unknown command "x" for "sluice list"`.
		fmt.Fprintf(w, "sluice: %s (see 'sluice --help')\n", strings.ReplaceAll(msg, "\n", " "))
		return 2
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil {
			fmt.Fprintln(w, "sluice:", describe(ee.err))
		}
		return ee.code
	}
	fmt.Fprintln(w, "sluice:", describe(err))
	return 2
}

// usageLine is the command's path and its Use after the name, with
// "[flags]" before the arguments when Use names no flag itself:
// "sluice list test [flags] DOMAIN|URL".
func usageLine(cmd *cobra.Command) string {
	_, rest, _ := strings.Cut(cmd.Use, " ")
	line := cmd.CommandPath()
	if hasFlags(cmd) && !strings.Contains(rest, "-") {
		line += " [flags]"
	}
	if rest != "" {
		line += " " + rest
	}
	return line
}

// hasFlags tells whether cmd takes a flag besides --help.
func hasFlags(cmd *cobra.Command) bool {
	has := false
	visit := func(f *pflag.Flag) { has = has || f.Name != "help" && !f.Hidden }
	cmd.LocalFlags().VisitAll(visit)
	cmd.InheritedFlags().VisitAll(visit)
	return has
}

// name is the command's path without "sluice ": "list add".
func name(cmd *cobra.Command) string {
	if !cmd.HasParent() {
		return cmd.Name()
	}
	return strings.TrimPrefix(cmd.CommandPath(), cmd.Root().Name()+" ")
}

// groupArgs is the Args of a command that only groups subcommands: an
// argument that names none is a wrong command line.
func groupArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usagef(cmd, "unknown command %q for %q (see '%s --help')", args[0], cmd.CommandPath(), cmd.CommandPath())
	}
	return nil
}

// groupRun shows the help of a command that only groups subcommands.
func groupRun(cmd *cobra.Command, _ []string) error { return cmd.Help() }

// flagError turns pflag's errors into the one style: the flag, the value
// and what it wants, then the usage line.
func flagError(cmd *cobra.Command, err error) error {
	var iv *pflag.InvalidValueError
	if errors.As(err, &iv) {
		f := iv.GetFlag()
		want := ""
		switch f.Value.Type() {
		case "duration":
			want = " (want a duration such as 30m or 1h)"
		case "int", "int64", "uint", "uint16":
			want = " (want a whole number)"
		case "bool":
			want = " (want true or false)"
		}
		return usagef(cmd, "--%s: invalid value %q%s", f.Name, iv.GetValue(), want)
	}
	return usagef(cmd, "%s", err.Error())
}

// argsBetween is cobra's Args for a command that takes from min to max
// arguments (max -1: no limit), in the one style.
func argsBetween(min, max int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		n := len(args)
		switch {
		case max == 0 && n > 0:
			return usagef(cmd, "%s takes no arguments, got %q", name(cmd), args[0])
		case min == max && n != min:
			return usagef(cmd, "%s needs %s, got %d", name(cmd), argCount(min), n)
		case n < min:
			return usagef(cmd, "%s needs at least %s, got %d", name(cmd), argCount(min), n)
		case max >= 0 && n > max:
			return usagef(cmd, "%s takes at most %s, got %d", name(cmd), argCount(max), n)
		}
		return nil
	}
}

func argCount(n int) string { return fmt.Sprintf("%d %s", n, plural(n, "argument", "arguments")) }

var (
	noArgs    = argsBetween(0, 0)
	exactArgs = func(n int) cobra.PositionalArgs { return argsBetween(n, n) }
)

// packageNames are our packages' error prefixes; they mean nothing to the
// user and are dropped from what the CLI prints.
var packageNames = map[string]bool{
	"rules": true, "server": true, "dial": true, "auth": true, "socks": true,
	"proxy": true, "filter": true, "relay": true,
}

// describe renders err on one line, in the user's terms: without our
// packages' prefixes, and with Go's *fs.PathError and *net.OpError (which
// repeat the step, the file or address, and the system call) said once:
// "cannot open FILE: REASON", "cannot listen on ADDR: REASON (hint)".
func describe(err error) string {
	msg := err.Error()
	var ue *url.Error
	if errors.As(err, &ue) {
		// net/http's `Get "URL": REASON` reads as `URL: REASON`.
		msg = strings.Replace(msg, ue.Op+" \""+ue.URL+"\": ", ue.URL+": ", 1)
		msg = strings.Replace(msg, "fetch: "+ue.URL+": ", ue.URL+": ", 1)
	}
	if inner, said, key := osCause(err); inner != "" {
		if i := strings.LastIndex(msg, inner); i >= 0 {
			msg = dropSegments(msg[:i], key) + said + msg[i+len(inner):]
		}
	}
	return strings.ReplaceAll(dropSegments(msg, ""), "\n", " ")
}

// osCause finds the operating system's error in err's chain: its text as
// Go writes it, the same said for people, and the file or address it names.
func osCause(err error) (inner, said, key string) {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Addr != nil {
		addr := oe.Addr.String()
		reason := reasonOf(oe.Err)
		switch oe.Op {
		case "listen":
			return oe.Error(), "cannot listen on " + addr + ": " + reason + listenHint(oe.Err), addr
		case "dial":
			return oe.Error(), "cannot connect to " + addr + ": " + reason, addr
		}
	}
	var dns *net.DNSError
	if errors.As(err, &dns) {
		return dns.Error(), "cannot resolve " + dns.Name + ": " + dns.Err, dns.Name
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		verb := "cannot open"
		switch pe.Op {
		case "read":
			verb = "cannot read"
		case "write", "rename", "chmod", "sync", "close", "link", "symlink":
			verb = "cannot write"
		case "mkdir", "mkdirall":
			verb = "cannot create the folder"
		case "remove", "unlinkat":
			verb = "cannot remove"
		}
		return pe.Error(), verb + " " + pe.Path + ": " + reasonOf(pe.Err), pe.Path
	}
	return "", "", ""
}

// reasonOf is the system's reason without Go's step: "address already in
// use" rather than "bind: address already in use".
func reasonOf(err error) string {
	var se *os.SyscallError
	if errors.As(err, &se) {
		return se.Err.Error()
	}
	return err.Error()
}

func listenHint(err error) string {
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		return " (is another sluice running?)"
	case errors.Is(err, syscall.EACCES):
		return " (a port below 1024 needs root or CAP_NET_BIND_SERVICE)"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return " (no interface of this machine has that address)"
	}
	return ""
}

// dropSegments removes, from a "a: b: c" chain, the segments that are one
// of our package names (except right after a FILE:LINE, where a word such
// as "auth" or "rules" is a config key), and the steps that repeat key
// (the file or address the system's error names already): "listen
// 127.0.0.1:3128", "open FILE", "read config". Segments are separated by
// ": ".
func dropSegments(s, key string) string {
	parts := strings.Split(s, ": ")
	out := parts[:0]
	for i, p := range parts {
		last := i == len(parts)-1
		afterPosition := len(out) > 0 && filePosition.MatchString(out[len(out)-1])
		switch {
		case !last && packageNames[p] && !afterPosition:
			continue
		case !last && key != "" && (p == "read config" || p == key || isStep(p, key)):
			continue
		}
		out = append(out, p)
	}
	return strings.Join(out, ": ")
}

// filePosition matches a segment that ends with a line number: FILE:LINE.
var filePosition = regexp.MustCompile(`:\d+$`)

// isStep reports whether p is one word and key: "listen 127.0.0.1:3128".
func isStep(p, key string) bool {
	verb, rest, ok := strings.Cut(p, " ")
	return ok && rest == key && !strings.ContainsAny(verb, " ")
}
