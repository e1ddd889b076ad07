package server

import (
	"crypto/sha256"
	"fmt"
	"os"
	"strings"

	"github.com/sluiceproxy/sluice/proxy/auth"
	"github.com/sluiceproxy/sluice/rules"
)

// directory builds the LDAP checker of cfg, reading its password and CA
// files now: a file that cannot be read fails the load (the running state
// stays), named with the config's file and the line of its ldap key. When
// the old state had the same directory settings, its checker is kept, so
// that its cache and failure limits survive the reload.
func (s *Server) directory(cfg *rules.Config, old *state) (*auth.Directory, [sha256.Size]byte, error) {
	l := cfg.LDAP
	fail := func(err error) error {
		return &rules.ParseError{File: configName(cfg), Line: l.Line, Err: fmt.Errorf("auth: ldap: %w", err)}
	}
	dc := auth.DirectoryConfig{URL: l.URL, BindDN: l.BindDN, BaseDN: l.BaseDN, UserFilter: l.UserFilter,
		GroupAttribute: l.GroupAttribute, Groups: l.Groups, StartTLS: l.StartTLS}
	if l.BindPasswordFile != "" {
		data, err := os.ReadFile(l.BindPasswordFile)
		if err != nil {
			return nil, [sha256.Size]byte{}, fail(fmt.Errorf("bind_password_file: %w", err))
		}
		pw, _, _ := strings.Cut(string(data), "\n")
		if dc.BindPassword = strings.TrimRight(pw, "\r"); dc.BindPassword == "" {
			return nil, [sha256.Size]byte{}, fail(fmt.Errorf("bind_password_file: %s: the first line is empty", l.BindPasswordFile))
		}
	}
	var caPEM []byte
	if l.TLSCA != "" {
		var err error
		if caPEM, err = os.ReadFile(l.TLSCA); err != nil {
			return nil, [sha256.Size]byte{}, fail(fmt.Errorf("tls_ca: %w", err))
		}
		if dc.TLS, err = auth.TLSConfig(caPEM); err != nil {
			return nil, [sha256.Size]byte{}, fail(fmt.Errorf("tls_ca: %s: %w", l.TLSCA, err))
		}
	}
	key := directoryKey(l, dc.BindPassword, caPEM)
	if old != nil && old.dir != nil && old.dirKey == key {
		return old.dir, key, nil
	}
	d, err := auth.NewDirectory(dc)
	if err != nil {
		return nil, key, fail(err)
	}
	d.Logger, d.CacheTTL = s.log, l.Cache
	return d, key, nil
}

// directoryKey digests everything a Directory is built from (the
// password and CA included, so that changing their files renews it).
func directoryKey(l *rules.LDAP, password string, caPEM []byte) [sha256.Size]byte {
	c := *l
	c.Line = 0
	h := sha256.New()
	fmt.Fprintf(h, "%#v\x00%s\x00", c, password)
	h.Write(caPEM)
	return [sha256.Size]byte(h.Sum(nil))
}
