package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluiceproxy/sluice/rules"
)

func init() { extraCommands = append(extraCommands, allowCmd) }

func allowCmd() *cobra.Command {
	var (
		cfgPath, client, user, remove string
		dur                           time.Duration
		list                          bool
	)
	cmd := &cobra.Command{
		Use:   "allow DOMAIN --for DURATION [--client CIDR] [--user NAME] | --list | --remove DOMAIN",
		Short: "Add, list or remove temporary exceptions, evaluated before every rule",
		Long: `Allow a domain and its subdomains for a while, before every rule, optionally
only for a client network (--client 10.1.2.0/24 or one address) and a user.
The exceptions are kept in exceptions.json in the config's cache folder; the
running proxy picks changes up within a second, and drops an exception when
it ends, without a reload. --list shows them, --remove DOMAIN removes every
exception for DOMAIN. Exit status 1 when --remove finds no exception for
DOMAIN, 2 on a wrong command line or a file that cannot be read or written.`,
		Example: `  sluice allow -c /etc/sluice/sluice.yaml wikipedia.org --for 1h
  sluice allow -c /etc/sluice/sluice.yaml https://www.youtube.com/watch?v=x --for 45m --client 10.1.2.0/24
  sluice allow -c /etc/sluice/sluice.yaml --list
  sluice allow -c /etc/sluice/sluice.yaml --remove wikipedia.org`,
		Args: argsBetween(0, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			modes := 0
			for _, on := range []bool{list, remove != "", len(args) == 1} {
				if on {
					modes++
				}
			}
			if modes != 1 {
				return usagef(cmd, "give one of: DOMAIN --for DURATION, --list, --remove DOMAIN")
			}
			if cfgPath == "" {
				return usagef(cmd, "--config FILE is needed: the exceptions are kept in its cache folder")
			}
			cfg, err := rules.LoadConfig(cfgPath)
			if err != nil {
				return failed(err)
			}
			path := cfg.ExceptionsPath()
			cur, err := rules.LoadExceptions(path)
			if err != nil {
				return failed(err)
			}
			now := time.Now()
			w := cmd.OutOrStdout()
			switch {
			case list:
				n := 0
				for _, e := range cur {
					if now.Before(e.Until) {
						fmt.Fprintf(w, "%s (%s left)\n", e, e.Until.Sub(now).Round(time.Second))
						n++
					}
				}
				if n == 0 {
					fmt.Fprintln(w, "no temporary exceptions")
				}
				return nil
			case remove != "":
				domain, err := rules.ExceptionDomain(remove)
				if err != nil {
					return usagef(cmd, "--remove: %s", describe(err))
				}
				out, n := rules.RemoveException(cur, domain)
				if n == 0 {
					return negative(fmt.Errorf("no exception for %s", domain))
				}
				if err := rules.SaveExceptions(path, out); err != nil {
					return failed(err)
				}
				fmt.Fprintf(w, "removed %d exception(s) for %s\n", n, domain)
				return nil
			}
			domain, err := rules.ExceptionDomain(args[0])
			if err != nil {
				return usagef(cmd, "%s", describe(err))
			}
			if dur <= 0 || dur > rules.MaxExceptionFor {
				return usagef(cmd, "--for: want a duration such as 1h or 30m, at most %s", period(rules.MaxExceptionFor))
			}
			e := rules.Exception{Domain: domain, Until: now.Add(dur).Truncate(time.Second), User: user, Added: now.Truncate(time.Second)}
			if client != "" {
				if e.Client, err = rules.ParseClient(client); err != nil {
					return usagef(cmd, "--client: %q is not an IP address or a CIDR such as 10.1.2.0/24", client)
				}
			}
			if err := rules.SaveExceptions(path, rules.AddException(cur, e, now)); err != nil {
				return failed(err)
			}
			fmt.Fprintf(w, "allowed %s\n", e)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&cfgPath, "config", "c", "", "config file (its cache folder keeps the exceptions)")
	f.DurationVar(&dur, "for", 0, "how long the exception lasts, such as 1h or 30m")
	f.StringVar(&client, "client", "", "only for this client network (CIDR) or address")
	f.StringVar(&user, "user", "", "only for this authenticated user")
	f.BoolVar(&list, "list", false, "list the exceptions in force")
	f.StringVar(&remove, "remove", "", "remove every exception for this domain")
	return cmd
}
