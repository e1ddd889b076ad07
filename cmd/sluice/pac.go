package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/sluiceproxy/sluice/proxy/server"
	"github.com/sluiceproxy/sluice/rules"
)

func init() { extraCommands = append(extraCommands, pacCmd) }

func pacCmd() *cobra.Command {
	var cfgPath, host string
	cmd := &cobra.Command{
		Use:   "pac [--config FILE] [--host NAME]",
		Short: "Print the proxy auto-config (PAC) file that /proxy.pac and /wpad.dat serve",
		Long: `Print the PAC file generated from the config's pac: section. With
pac: proxies: set it names those replicas; otherwise it names --host (default:
the host of the first listen address, or this machine's name when that is every
interface) at the first listener's port. A running proxy serves the same file
at http://PROXY:PORT/proxy.pac and /wpad.dat, naming the address the browser
reached it at.`,
		Example: `  sluice pac -c /etc/sluice/sluice.yaml --host proxy.corp.example > proxy.pac`,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg := rules.Default()
			if cfgPath != "" {
				var err error
				if cfg, err = rules.LoadConfig(cfgPath); err != nil {
					return failed(err)
				}
			}
			file, err := server.PACFile(cfg, host)
			if err != nil {
				return failed(err)
			}
			fmt.Fprint(cmd.OutOrStdout(), file)
			return nil
		},
	}
	cmd.Flags().StringVarP(&cfgPath, "config", "c", "", "config file (default: the embedded default config)")
	cmd.Flags().StringVar(&host, "host", "", "the proxy's host name or IP address as clients reach it")
	return cmd
}
