package proxy

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/sluiceproxy/sluice/proxy/dial"
)

// Header names Sluice sets on its own answers.
const (
	// HeaderBlock names the rule that blocked a request: its name, else
	// "rule 3" (filter.RuleRef.Label), never its patterns.
	HeaderBlock = "X-Sluice-Block"
	// authChallenge is the exact challenge browsers prompt for (issue 4).
	authChallenge = `Basic realm="sluice"`
)

// textError writes a short text/plain answer that closes nothing.
func textError(w http.ResponseWriter, code int, msg string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Length", strconv.Itoa(len(msg)+1))
	w.WriteHeader(code)
	w.Write([]byte(msg + "\n"))
}

// requireAuth answers 407 with the Basic challenge.
func requireAuth(w http.ResponseWriter) {
	w.Header().Set("Proxy-Authenticate", authChallenge)
	textError(w, http.StatusProxyAuthRequired, "sluice: proxy authentication required")
}

// failDial answers a dial that failed or that the Guard refused.
func (s *Server) failDial(w http.ResponseWriter, x *exchange, addr string, err error) {
	x.dialErr = err
	code, msg, block := dialAnswer(x, addr, err)
	if block != "" {
		w.Header().Set(HeaderBlock, block)
	}
	textError(w, code, msg)
}

// dialAnswer maps a failed dial of x to its answer: when the Guard refused
// an address, 403 naming the rule or the reason (loop, private address),
// whatever error the dial ended with; otherwise dialFailure's. block is the
// X-Sluice-Block value, or "".
func dialAnswer(x *exchange, addr string, err error) (code int, msg, block string) {
	if x != nil {
		if rd := x.refused.Load(); rd != nil {
			block = rd.Reason
			if rd.Rule.Index > 0 {
				block = rd.Reason + ": " + blockHeader(*rd)
			}
			return http.StatusForbidden, "sluice: " + addr + " is blocked (" + block + ")", block
		}
	}
	code, msg = dialFailure(addr, err)
	return code, msg, ""
}

// dialFailure maps a failure to reach addr to a status and a short text
// that never contains a password (dial.Error promises that) nor raw
// internals: 403 for a loop, a blocked address or an upstream's own
// refusal (with what it answered), 400 for an unspecified address, 504 on
// timeout, 502 otherwise.
func dialFailure(addr string, err error) (int, string) {
	kind := dial.Classify(err)
	if kind == dial.KindUpstreamRefused {
		msg := "sluice: upstream refused " + addr
		if de, ok := asDialError(err); ok {
			msg = "sluice: upstream " + de.Upstream + " refused " + addr
			if inner := innermost(de); inner != nil {
				msg += ": " + printable(inner.Error())
			}
		}
		return http.StatusForbidden, msg
	}
	var what string
	switch kind {
	case dial.KindLoop:
		return http.StatusForbidden, "sluice: " + addr + " is blocked (loop: Sluice listens there)"
	case dial.KindBlocked:
		return http.StatusForbidden, "sluice: " + addr + " is blocked"
	case dial.KindUnspecified:
		return http.StatusBadRequest, "sluice: " + addr + " is an unspecified address, which is never dialed"
	case dial.KindTimeout:
		what = "timed out"
	case dial.KindDNS:
		what = "name does not resolve"
	case dial.KindRefused:
		what = "connection refused"
	case dial.KindHostUnreachable:
		what = "host unreachable"
	case dial.KindNetUnreachable:
		what = "network unreachable"
	default:
		what = kind.String()
		if kind == dial.KindOther {
			what = "connection failed"
		}
	}
	msg := "sluice: cannot reach " + addr
	if de, ok := asDialError(err); ok && de.Upstream != "" {
		msg += " via upstream " + de.Upstream
	}
	msg += ": " + what
	if kind == dial.KindTimeout {
		return http.StatusGatewayTimeout, msg
	}
	return http.StatusBadGateway, msg
}

// innermost is the end of err's chain: what the upstream said.
func innermost(err error) error {
	for {
		next := errors.Unwrap(err)
		if next == nil {
			return err
		}
		err = next
	}
}

// printable keeps printable ASCII (an upstream's status text is not ours
// to trust) and replaces the rest with '?'.
func printable(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c < ' ' || c > '~' {
			b[i] = '?'
		}
	}
	return string(b)
}

func asDialError(err error) (*dial.Error, bool) {
	var de *dial.Error
	ok := errors.As(err, &de)
	return de, ok
}
