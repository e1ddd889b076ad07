package rules

import "go.yaml.in/yaml/v3"

// Transparent configures the transparent gateway listeners (issue 14):
// connections that a firewall redirected to Sluice (nftables or iptables
// REDIRECT), whose original destination the socket knows. The name
// decided on is taken from the first bytes (TLS SNI, HTTP Host).
type Transparent struct {
	// Listen lists the host:port addresses of the transparent listeners.
	// Empty: none.
	Listen []string
	// VerifyHost requires the sniffed name to resolve (through hosts: and
	// the resolver) to the original destination address; otherwise the
	// connection is refused with reason "host mismatch". Parse sets it
	// true unless `verify_host: false`.
	VerifyHost bool
	// Unnamed is the action for a connection whose first bytes carry no
	// usable name (no SNI or Host, Encrypted Client Hello, not TLS or
	// HTTP): block (Parse's default) or allow, in which case the original
	// destination address is decided by the IP rules.
	Unnamed Action
	// Line is the config line of the transparent key; 0 when absent.
	Line int
}

// parseTransparent reads `transparent: {listen, verify_host, unnamed}`.
func (p *cfgParser) parseTransparent(n *yaml.Node) error {
	kvs, err := p.pairs(n, "transparent: ")
	if err != nil {
		return err
	}
	t := &p.cfg.Transparent
	t.Line = n.Line
	for _, kv := range kvs {
		ctx := "transparent: " + kv.key.Value + ": "
		switch kv.key.Value {
		case "listen":
			t.Listen, err = p.listenAddrs(kv.val, ctx)
		case "verify_host":
			t.VerifyHost, err = p.boolean(kv.val, ctx)
			p.verifyHostSet = true
		case "unnamed":
			var s string
			if s, err = p.str(kv.val, ctx); err == nil {
				switch Action(s) {
				case Allow, Block:
					t.Unnamed = Action(s)
				default:
					err = p.errf(kv.val, "%smust be allow or block, not %q", ctx, s)
				}
			}
		default:
			err = p.errf(kv.key, "transparent: unknown key %q (want listen, verify_host, unnamed)", kv.key.Value)
		}
		if err != nil {
			return err
		}
	}
	return nil
}
