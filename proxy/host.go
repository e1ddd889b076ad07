package proxy

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/sluiceproxy/sluice/rules"
)

var (
	// errBadTarget means a request's target is not a usable host and port.
	errBadTarget = errors.New("proxy: bad target")
)

// target is a decided destination.
type target struct {
	host string // normalized: no brackets around IPv6
	port uint16
}

// addr is the dialable "host:port" form.
func (t target) addr() string { return net.JoinHostPort(t.host, strconv.Itoa(int(t.port))) }

// parseTarget splits hostport ("example.com:443", "[::1]:80", or a bare
// host when defPort is not 0) and normalizes the host.
func (s *Server) parseTarget(hostport string, defPort uint16) (target, error) {
	host, portStr := hostport, ""
	if i := strings.LastIndexByte(hostport, ':'); i >= 0 && !strings.HasSuffix(hostport, "]") {
		var err error
		host, portStr, err = net.SplitHostPort(hostport)
		if err != nil {
			return target{}, fmt.Errorf("%w %q: %v", errBadTarget, hostport, err)
		}
	}
	port := defPort
	if portStr != "" || defPort == 0 {
		p, err := strconv.ParseUint(portStr, 10, 16)
		if err != nil || p == 0 {
			return target{}, fmt.Errorf("%w %q: bad port", errBadTarget, hostport)
		}
		port = uint16(p)
	}
	h, err := rules.NormalizeHost(host) // as the rules' own entries were
	if err != nil {
		return target{}, fmt.Errorf("%w %q: %v", errBadTarget, hostport, err)
	}
	return target{host: h, port: port}, nil
}

// parseBasic parses a Proxy-Authorization value of the Basic scheme
// (RFC 7617). ok is false for any other scheme or a malformed value.
func parseBasic(v string) (user, password string, ok bool) {
	scheme, cred, found := strings.Cut(strings.TrimSpace(v), " ")
	if !found || !strings.EqualFold(scheme, "Basic") {
		return "", "", false
	}
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(cred))
	if err != nil {
		return "", "", false
	}
	user, password, ok = strings.Cut(string(b), ":")
	if !ok || user == "" {
		return "", "", false
	}
	return user, password, true
}
