package dial

import (
	"net"
	"net/url"
	"strings"
)

// Describe tells, for people, how traffic on route leaves: "direct", or
// the route's name and its hops with passwords redacted:
//
//	office: http://parent.corp:3128 (user:*** redacted)
//	vpn: https://edge.example:443 -> socks5://exit.example:1080 (u:*** redacted)
//	pool: failover office, tor
//
// Route "" describes the default route.
func (r *Router) Describe(name string) string {
	rt, ok := r.lookup(name)
	switch {
	case !ok:
		return name + ": unknown route"
	case rt == nil:
		return RouteDirect
	case rt.dialer == nil:
		return rt.name + ": failover " + strings.Join(rt.failover, ", ")
	}
	hops := make([]string, len(rt.chain))
	for i, u := range rt.chain {
		hops[i] = describeHop(u)
	}
	s := rt.name + ": " + strings.Join(hops, " -> ")
	if rt.isolate != IsolateNone {
		s += " (isolate " + rt.isolate.String() + ")"
	}
	return s
}

// describeHop prints scheme://host:port, and the user with the password
// masked.
func describeHop(u *url.URL) string {
	port := u.Port()
	if port == "" {
		switch strings.ToLower(u.Scheme) {
		case "http":
			port = "80"
		case "https":
			port = "443"
		default:
			port = "1080"
		}
	}
	s := strings.ToLower(u.Scheme) + "://" + net.JoinHostPort(u.Hostname(), port)
	if u.User != nil {
		if _, ok := u.User.Password(); ok {
			s += " (" + u.User.Username() + ":*** redacted)"
		} else {
			s += " (user " + u.User.Username() + ")"
		}
	}
	return s
}
