package rules

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseLDAP(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "sluice.yaml")
	src := dedent(`
		default: allow
		auth:
		  ldap:
		    url: "ldap://127.0.0.1:389"
		    bind_dn: "cn=sluice,dc=school,dc=example"
		    bind_password_file: ldap.pw
		    base_dn: "ou=people,dc=school,dc=example"
		    user_filter: "(sAMAccountName={user})"
		    group_attribute: isMemberOf
		    groups:
		      students: "cn=students,ou=groups,dc=school,dc=example"
		    tls_ca: ca.pem
		    starttls: true
		    cache: 2m
		rules:
		  - block: [.roblox.com]
		    groups: [students]
		`)
	cfg, err := Parse(file, []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	want := &LDAP{URL: "ldap://127.0.0.1:389", BindDN: "cn=sluice,dc=school,dc=example",
		BindPasswordFile: filepath.Join(dir, "ldap.pw"), BaseDN: "ou=people,dc=school,dc=example",
		UserFilter: "(sAMAccountName={user})", GroupAttribute: "isMemberOf",
		Groups: map[string]string{"students": "cn=students,ou=groups,dc=school,dc=example"},
		TLSCA:  filepath.Join(dir, "ca.pem"), StartTLS: true, Cache: 2 * time.Minute, Line: 3}
	if !reflect.DeepEqual(cfg.LDAP, want) {
		t.Errorf("got  %+v\nwant %+v", cfg.LDAP, want)
	}

	cfg, err = Parse(file, []byte("default: allow\nauth:\n  ldap: {url: \"ldaps://dc.test:636\", base_dn: \"dc=test\"}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.LDAP.UserFilter != "(uid={user})" || cfg.LDAP.GroupAttribute != "memberOf" || cfg.LDAP.Cache != 0 {
		t.Errorf("defaults: %+v", cfg.LDAP)
	}
}

func TestParseLDAPErrors(t *testing.T) {
	const ok = `url: "ldap://127.0.0.1:389", base_dn: "dc=test"`
	tests := []struct{ name, src, want string }{
		{"unknown auth key", "auth:\n  radius: {}\n", `sluice.yaml:3: auth: unknown key "radius" (want ldap)`},
		{"unknown ldap key", "auth:\n  ldap:\n    url: ldap://h:389\n    basedn: x\n", `sluice.yaml:5: auth: ldap: unknown key "basedn"`},
		{"bad url", "auth:\n  ldap: {url: \"http://h:389\", base_dn: x}\n", `sluice.yaml:3: auth: ldap: url: want ldap://HOST:PORT or ldaps://HOST:PORT, not "http://h:389"`},
		{"no url", "auth:\n  ldap: {base_dn: x}\n", `sluice.yaml:3: auth: ldap: needs url`},
		{"no base", "auth:\n  ldap: {url: \"ldap://h:389\"}\n", `sluice.yaml:3: auth: ldap: needs base_dn`},
		{"bind without password", "auth:\n  ldap: {" + ok + ", bind_dn: \"cn=s\"}\n", `sluice.yaml:3: auth: ldap: bind_dn needs bind_password_file`},
		{"filter without user", "auth:\n  ldap: {" + ok + ", user_filter: \"(uid=alice)\"}\n", `sluice.yaml:3: auth: ldap: user_filter: want a filter in parentheses holding {user}`},
		{"starttls on ldaps", "auth:\n  ldap: {url: \"ldaps://h:636\", base_dn: x, starttls: true}\n", `sluice.yaml:3: auth: ldap: starttls is for ldap:// URLs`},
		{"bad cache", "auth:\n  ldap: {" + ok + ", cache: soon}\n", `sluice.yaml:3: auth: ldap: cache:`},
		{"empty group dn", "auth:\n  ldap:\n    url: ldap://h:389\n    base_dn: x\n    groups:\n      students: \"\"\n", `sluice.yaml:7: auth: ldap: groups: students: want a group DN`},
		{"unknown group", "auth:\n  ldap:\n    url: ldap://h:389\n    base_dn: x\n    groups: {students: \"cn=s\"}\nrules:\n  - block: [a.test]\n    groups: [studnets]\n",
			`sluice.yaml:9: rule 1: unknown group "studnets" (did you mean "students"?)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Each source follows a first line "default: allow".
			_, err := Parse("sluice.yaml", []byte("default: allow\n"+tt.src))
			if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
				t.Errorf("got  %v\nwant %s…", err, tt.want)
			}
		})
	}
}
