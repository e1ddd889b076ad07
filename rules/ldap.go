package rules

import (
	"net/url"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// LDAP configures checking proxy credentials against a directory
// (OpenLDAP, Active Directory): `auth: {ldap: {...}}`.
type LDAP struct {
	// URL is the server: ldap://host:port or ldaps://host:port.
	URL string
	// BindDN is the service account that searches for users' DNs. Empty:
	// an anonymous search.
	BindDN string
	// BindPasswordFile holds the service account's password (its first
	// line). Read when the config is loaded; never logged.
	BindPasswordFile string
	// BaseDN is where users are searched.
	BaseDN string
	// UserFilter finds a user: {user} is replaced by the escaped user name.
	// Default "(uid={user})".
	UserFilter string
	// GroupAttribute is the user entry's attribute listing its groups'
	// DNs. Default "memberOf".
	GroupAttribute string
	// Groups maps a Sluice group name (usable in rules' groups:) to a
	// directory group DN.
	Groups map[string]string
	// TLSCA is a PEM file of the CAs that verify the server (ldaps or
	// StartTLS). Empty: the system's.
	TLSCA string
	// StartTLS upgrades an ldap:// connection with StartTLS before any bind.
	StartTLS bool
	// Cache is how long a successful check is remembered. Default 5 min.
	Cache time.Duration
	// Line is the config line of the ldap key, for errors found later.
	Line int
}

// DefaultUserFilter is LDAP.UserFilter's default.
const DefaultUserFilter = "(uid={user})"

// parseAuth reads `auth: {ldap: {...}}`.
func (p *cfgParser) parseAuth(n *yaml.Node) error {
	kvs, err := p.pairs(n, "auth: ")
	if err != nil {
		return err
	}
	for _, kv := range kvs {
		switch kv.key.Value {
		case "ldap":
			if err := p.parseLDAP(kv.key, kv.val); err != nil {
				return err
			}
		default:
			return p.errf(kv.key, "auth: unknown key %q (want ldap)", kv.key.Value)
		}
	}
	return nil
}

func (p *cfgParser) parseLDAP(key, n *yaml.Node) error {
	kvs, err := p.pairs(n, "auth: ldap: ")
	if err != nil {
		return err
	}
	l := &LDAP{Line: key.Line, UserFilter: DefaultUserFilter, GroupAttribute: "memberOf"}
	for _, kv := range kvs {
		ctx := "auth: ldap: " + kv.key.Value + ": "
		var s string
		switch kv.key.Value {
		case "url":
			if s, err = p.str(kv.val, ctx); err != nil {
				return err
			}
			u, perr := url.Parse(s)
			if perr != nil || (u.Scheme != "ldap" && u.Scheme != "ldaps") || u.Host == "" {
				return p.errf(kv.val, "%swant ldap://HOST:PORT or ldaps://HOST:PORT, not %q", ctx, s)
			}
			l.URL = s
		case "bind_dn":
			l.BindDN, err = p.str(kv.val, ctx)
		case "bind_password_file":
			if s, err = p.str(kv.val, ctx); err == nil {
				l.BindPasswordFile = p.path(s)
			}
		case "base_dn":
			l.BaseDN, err = p.str(kv.val, ctx)
		case "user_filter":
			if s, err = p.str(kv.val, ctx); err != nil {
				return err
			}
			if !strings.Contains(s, "{user}") || !strings.HasPrefix(s, "(") || !strings.HasSuffix(s, ")") {
				return p.errf(kv.val, "%swant a filter in parentheses holding {user}, such as (uid={user}), not %q", ctx, s)
			}
			l.UserFilter = s
		case "group_attribute":
			if s, err = p.str(kv.val, ctx); err == nil {
				if s == "" {
					return p.errf(kv.val, "%smust not be empty", ctx)
				}
				l.GroupAttribute = s
			}
		case "groups":
			gkvs, gerr := p.pairs(kv.val, ctx)
			if gerr != nil {
				return gerr
			}
			l.Groups = make(map[string]string, len(gkvs))
			for _, g := range gkvs {
				dn, derr := p.str(g.val, ctx+g.key.Value+": ")
				if derr != nil {
					return derr
				}
				if dn == "" {
					return p.errf(g.val, "%s%s: want a group DN, such as cn=students,ou=groups,dc=school,dc=example", ctx, g.key.Value)
				}
				l.Groups[g.key.Value] = dn
			}
		case "tls_ca":
			if s, err = p.str(kv.val, ctx); err == nil {
				l.TLSCA = p.path(s)
			}
		case "starttls":
			l.StartTLS, err = p.boolean(kv.val, ctx)
		case "cache":
			if l.Cache, err = p.duration(kv.val, ctx); err == nil && l.Cache < 0 {
				return p.errf(kv.val, "%smust not be negative", ctx)
			}
		default:
			return p.errf(kv.key, "auth: ldap: unknown key %q (want url, bind_dn, bind_password_file, base_dn, "+
				"user_filter, group_attribute, groups, tls_ca, starttls or cache)", kv.key.Value)
		}
		if err != nil {
			return err
		}
	}
	if l.URL == "" {
		return p.errf(key, "auth: ldap: needs url (such as ldap://127.0.0.1:389)")
	}
	if l.BaseDN == "" {
		return p.errf(key, "auth: ldap: needs base_dn (such as ou=people,dc=school,dc=example)")
	}
	if l.BindDN != "" && l.BindPasswordFile == "" {
		return p.errf(key, "auth: ldap: bind_dn needs bind_password_file")
	}
	if l.StartTLS && strings.HasPrefix(l.URL, "ldaps:") {
		return p.errf(key, "auth: ldap: starttls is for ldap:// URLs; ldaps:// is TLS already")
	}
	p.cfg.LDAP = l
	return nil
}

// hasGroup reports whether name is a group of `groups:` or of the
// directory's `auth: ldap: groups:`.
func (c *Config) hasGroup(name string) bool {
	if _, ok := c.Groups[name]; ok {
		return true
	}
	if c.LDAP != nil {
		_, ok := c.LDAP.Groups[name]
		return ok
	}
	return false
}

// groupNames lists both kinds of group names, for suggestions.
func (c *Config) groupNames() []string {
	names := mapKeys(c.Groups)
	if c.LDAP != nil {
		names = append(names, mapKeys(c.LDAP.Groups)...)
	}
	return names
}
