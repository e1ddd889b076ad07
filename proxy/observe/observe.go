// Package observe is what a front end reports about each request or
// connection it served, once, when its access line is written: the
// numbers behind the admin listener's /metrics and status page. It is a
// leaf (standard library only) so that both front ends can fill it in and
// the composition root can count it, without a front end importing
// Prometheus.
package observe

// Front ends, the values of Access.Frontend.
const (
	HTTP   = "http"
	SOCKS5 = "socks5"
	SOCKS4 = "socks4"
	// Transparent is the transparent gateway listener's front end.
	Transparent = "transparent"
)

// Verdicts, the values of Access.Verdict.
const (
	Allow = "allow"
	Block = "block"
	// None means refused before the policy decided: bad credentials, a
	// malformed request, a request to the proxy itself.
	None = "none"
)

// Access is one request (HTTP) or connection (SOCKS), as its access line
// reports it.
type Access struct {
	// Frontend is HTTP, SOCKS5, SOCKS4 (SOCKS4a included) or Transparent.
	Frontend string
	// Verdict is the final one: Block when the dial-time guard refused an
	// address of an allowed request.
	Verdict string
	// Category is the deciding rule's category; "" when none.
	Category string
	// Host is the target's host (no port), "" when the request had none.
	Host string
	// Up and Down are the bytes client→origin and origin→client.
	Up, Down int64
	// DialErr is the error of a dial that failed, nil otherwise.
	DialErr error
	// WouldBlock names the report-only rule (its Label) that would have
	// blocked this allowed request; "" when none.
	WouldBlock string
}
