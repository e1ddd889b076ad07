package socks

import (
	"errors"
	"os"
	"syscall"

	"github.com/sluiceproxy/sluice/proxy/dial"
)

// errTimeout is the error of an expired deadline.
var errTimeout = os.ErrDeadlineExceeded

// dialKind maps the Kind of a *dial.Error in err's chain.
func dialKind(err error) (replyCode, bool) {
	var de *dial.Error
	if !errors.As(err, &de) {
		return 0, false
	}
	switch de.Kind {
	case dial.KindDNS, dial.KindHostUnreachable:
		return repHostUnreachable, true
	case dial.KindNetUnreachable:
		return repNetworkUnreachable, true
	case dial.KindRefused:
		return repConnectionRefused, true
	case dial.KindTimeout:
		return repTTLExpired, true
	case dial.KindLoop, dial.KindBlocked, dial.KindUpstreamRefused:
		return repNotAllowed, true
	case dial.KindUnspecified:
		return repHostUnreachable, true
	}
	return repGeneralFailure, true // KindOther, KindUpstream, KindUpstreamAuth
}

func isRefused(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED)
}

func isHostUnreachable(err error) bool {
	return errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.EHOSTDOWN)
}

func isNetUnreachable(err error) bool {
	return errors.Is(err, syscall.ENETUNREACH) || errors.Is(err, syscall.ENETDOWN)
}
