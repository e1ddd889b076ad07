package rules

import (
	"errors"
	"fmt"
	"net/url"
)

// IsolationModes are the values of an upstream's isolate: key.
var IsolationModes = []string{"none", "client", "user", "destination"}

// checkIsolate refuses isolation where it cannot work: on a failover list
// (each member isolates on its own), or when the chain's last hop, the one
// that gets the isolation credentials, is socks4a or needs real
// credentials of its own.
func checkIsolate(u Upstream) error {
	if u.Isolate == "" || u.Isolate == "none" {
		return nil
	}
	if len(u.Chain) == 0 {
		return errors.New("applies to a chain only (set it on the failover members)")
	}
	last, err := url.Parse(u.Chain[len(u.Chain)-1])
	if err != nil {
		return errors.New("invalid last hop")
	}
	switch {
	case last.Scheme == "socks4a":
		return fmt.Errorf("the last hop %s is socks4a; isolation needs socks5, socks5h, http or https", last.Redacted())
	case last.User != nil:
		return fmt.Errorf("the last hop %s has credentials of its own; isolation sends a derived user name instead, so it cannot keep them (drop isolate, or the credentials)", last.Redacted())
	}
	return nil
}
