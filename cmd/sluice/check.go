package main

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluiceproxy/sluice/filter"
	"github.com/sluiceproxy/sluice/proxy/server"
	"github.com/sluiceproxy/sluice/rules"
)

// loadSet reads the config at path, or the embedded default when path is "".
func loadSet(path string) (*rules.Set, error) {
	if path == "" {
		return rules.LoadSet(rules.Default())
	}
	return rules.Load(path)
}

// loadEngine reads the config at path and compiles it, as serve would.
func loadEngine(path string) (*rules.Set, *filter.Engine, error) {
	set, err := loadSet(path)
	if err != nil {
		return nil, nil, err
	}
	eng, err := filter.Compile(set)
	if err != nil {
		return nil, nil, err
	}
	return set, eng, nil
}

func checkCmd() *cobra.Command {
	var (
		cfgPath, client, user, at string
		noResolve                 bool
	)
	cmd := &cobra.Command{
		Use:   "check [--config FILE] [--client IP] [--user NAME] [--time T] [--no-resolve] TARGET",
		Short: "Tell whether a destination would be allowed, by which rule, and its route",
		Long: `Check a destination against the rules without running the proxy.
TARGET is a host, host:port or URL; a bare host is checked on port 443.
When the name is allowed on the direct route, it is resolved as the proxy
would (hosts:, then Go's own resolver) and each address is decided again
(Sluice's own listeners, check_resolved, deny_private); when every address
would be refused, the verdict is block. --no-resolve skips that step.
--user names the authenticated user the rules see; a name that is not in
the users: file is warned about on standard error, and with LDAP users
the directory's groups are not looked up (only the config's groups:).
The first line starts with "allow" or "block"; the exit status is 0 when
allowed, 1 when blocked and 2 on error.`,
		Example: `  sluice check --config sluice.yaml www.tiktok.com
  sluice check --config sluice.yaml --client 10.1.2.3 http://example.com/
  sluice check --config sluice.yaml --user alice news.example:443
  sluice check --config sluice.yaml --time "2025-03-03 21:30" games.example`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			set, eng, err := loadEngine(cfgPath)
			if err != nil {
				return failed(err)
			}
			req, err := parseTarget(args[0])
			if err != nil {
				return usagef(cmd, "%v", err)
			}
			if client != "" {
				a, err := netip.ParseAddr(client)
				if err != nil {
					return usagef(cmd, "--client: %q is not an IP address", client)
				}
				req.Client = a.Unmap()
			}
			req.User = user
			req.Time = time.Now()
			if at != "" {
				t, err := time.ParseInLocation("2006-01-02 15:04", at, time.Local)
				if err != nil {
					if t, err = time.Parse(time.RFC3339, at); err != nil {
						return usagef(cmd, "--time: %q is not a time (want \"2006-01-02 15:04\", local, or RFC 3339 such as 2006-01-02T15:04:05Z)", at)
					}
				}
				req.Time = t
			}
			if user != "" {
				if w := unknownUser(set.Config, user); w != "" {
					fmt.Fprintln(cmd.ErrOrStderr(), "warning: --user "+user+": "+w)
				}
			}
			exc, err := rules.LoadExceptions(set.Config.ExceptionsPath())
			if err != nil && set.Config.ExceptionsPath() != "" {
				return failed(err)
			}
			d := server.DecideExcept(eng, filter.NewExceptions(exc), set.Config.Upstream, req)
			named := d // the decision on the name, before any dial-time refusal
			var steps []server.ResolvedStep
			var rerr error
			if d.Verdict == filter.Allow && !noResolve {
				steps, rerr = server.ExplainResolved(cmd.Context(), set.Config, eng, req, d, resolveTimeout)
				if len(steps) > 0 && allRefused(steps) {
					// Every address would be refused at dial time.
					d = steps[0].Decision
				}
			}
			printDecision(cmd.OutOrStdout(), set, req, d)
			printResolved(cmd.OutOrStdout(), req, named, steps, rerr)
			if d.Verdict != filter.Allow {
				return negative(nil)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&cfgPath, "config", "c", "", "config file (default: the embedded default config)")
	f.StringVar(&client, "client", "", "client source address the rules see")
	f.StringVar(&user, "user", "", "authenticated user name the rules see")
	f.BoolVar(&noResolve, "no-resolve", false, "skip the resolved-address step (no DNS lookup)")
	f.StringVar(&at, "time", "", `time of the request, "2006-01-02 15:04" local or RFC 3339 (default: now)`)
	return cmd
}

// parseTarget turns a host, host:port or URL into a request.
func parseTarget(s string) (filter.Request, error) {
	host, port := s, "443"
	if strings.Contains(s, "://") {
		u, err := url.Parse(s)
		if err != nil {
			return filter.Request{}, fmt.Errorf("TARGET %q is not a URL", s)
		}
		host, port = u.Hostname(), u.Port()
		if port == "" {
			switch u.Scheme {
			case "http", "ws":
				port = "80"
			default:
				port = "443"
			}
		}
	} else if h, p, err := net.SplitHostPort(s); err == nil {
		host, port = h, p
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 {
		return filter.Request{}, fmt.Errorf("TARGET %q: invalid port %q (want 1-65535)", s, port)
	}
	h, err := rules.NormalizeHost(host)
	if err != nil {
		return filter.Request{}, fmt.Errorf("TARGET %q: invalid host name %q", s, host)
	}
	return filter.Request{Host: h, Port: uint16(n)}, nil
}

// unknownUser says why the rules' view of user may differ from the
// proxy's, or "": a user the users: file does not hold cannot log in, and
// the directory groups of an LDAP user are not looked up here.
func unknownUser(cfg *rules.Config, user string) string {
	switch {
	case cfg.LDAP != nil:
		return "users are checked against LDAP, which check does not query: the user's directory groups are not shown, only the config's groups:"
	case cfg.Users == "":
		return "the config has no users: file, so no client can log in as this user"
	}
	users, err := listUsers(cfg.Users)
	if err != nil {
		return "cannot read the users: file: " + describe(err)
	}
	if !slices.Contains(users, user) {
		return "not a user in " + cfg.Users + "; the rules are decided for this name anyway"
	}
	return ""
}

func printDecision(w io.Writer, set *rules.Set, req filter.Request, d filter.Decision) {
	target := net.JoinHostPort(req.Host, strconv.Itoa(int(req.Port)))
	fmt.Fprintf(w, "%s %s: %s\n", d.Verdict, target, d.Reason)
	if d.Default {
		fmt.Fprintf(w, "rule: none (default: %s)\n", d.Verdict)
	} else if d.Rule.Index > 0 {
		fmt.Fprintf(w, "rule: %s: %s\n", d.Rule, d.Rule.Text)
		if d.Rule.Pattern != "" {
			fmt.Fprintf(w, "pattern: %s\n", d.Rule.Pattern)
		}
	}
	if d.Category != "" {
		fmt.Fprintf(w, "category: %s\n", d.Category)
		for _, m := range rules.Explain(set, req.Host) {
			if m.Category != d.Category {
				continue
			}
			kind := "entry"
			if m.Allow {
				kind = "exception"
			}
			fmt.Fprintf(w, "  %s:%d: %s %s\n", m.File, m.Line, kind, m.Entry)
		}
	}
	if d.WouldBlock {
		fmt.Fprintf(w, "would block: %s: %s (report only: mode: report)\n", d.Report, d.Report.Text)
	}
	if d.Enforce != "" {
		fmt.Fprintf(w, "safesearch: connects to %s instead, the client's TLS and Host unchanged\n", d.Enforce)
	}
	if d.Verdict == filter.Allow {
		if desc, err := server.DescribeRoute(set.Config, d.Via); err == nil {
			fmt.Fprintf(w, "route: %s\n", desc)
		}
		mode, name, err := server.IsolationIdentity(set.Config, d.Via, req.Client, req.User, target)
		switch {
		case err != nil:
			fmt.Fprintf(w, "isolation: %s\n", describe(err))
		case name != "":
			fmt.Fprintf(w, "isolation: %s, upstream user %s\n", mode, name)
		}
	}
}

// resolveTimeout bounds the lookup of `sluice check`'s resolved-address step.
const resolveTimeout = 5 * time.Second

func allRefused(steps []server.ResolvedStep) bool {
	for _, s := range steps {
		if s.Err == nil {
			return false
		}
	}
	return true
}

// printResolved prints the resolved-address step: each address and what
// the dial-time guard decides about it.
func printResolved(w io.Writer, req filter.Request, d filter.Decision, steps []server.ResolvedStep, err error) {
	host := req.Host
	if d.Enforce != "" {
		host = d.Enforce
	}
	if err != nil {
		if msg := describe(err); strings.Contains(msg, host) {
			fmt.Fprintf(w, "resolved: %s\n", msg)
		} else {
			fmt.Fprintf(w, "resolved: %s: %s\n", host, msg)
		}
		return
	}
	if len(steps) == 0 {
		return
	}
	fmt.Fprintf(w, "resolved: %s (each address decided again at dial time)\n", host)
	for _, s := range steps {
		if s.Err == nil {
			fmt.Fprintf(w, "  %s: allow\n", s.Addr)
			continue
		}
		line := fmt.Sprintf("  %s: block: %s", s.Addr, s.Decision.Reason)
		if s.Decision.Rule.Index > 0 {
			line += ": " + s.Decision.Rule.String() + ": " + s.Decision.Rule.Text
			if s.Decision.Rule.Pattern != "" {
				line += " (pattern " + s.Decision.Rule.Pattern + ")"
			}
		}
		fmt.Fprintln(w, line)
	}
}
