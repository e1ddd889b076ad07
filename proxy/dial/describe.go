package dial

import (
	"net"
	"net/url"
	"strings"
)

// Describe tells, for people, how traffic on route leaves: "direct", or
// the route's name and its hops with passwords redacted:
//
//	office: http://user:xxxxx@parent.corp:3128
//	vpn: https://edge.example:443 -> socks5://u:xxxxx@exit.example:1080
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

// describeHop prints scheme://host:port with the user, and the password
// masked as url.URL.Redacted masks it in logs and errors: user:xxxxx@.
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
	s := strings.ToLower(u.Scheme) + "://"
	if u.User != nil {
		if _, ok := u.User.Password(); ok {
			s += url.UserPassword(u.User.Username(), "xxxxx").String() + "@"
		} else {
			s += u.User.String() + "@"
		}
	}
	return s + net.JoinHostPort(u.Hostname(), port)
}
