package accesslog

import (
	"log/slog"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// A line to a JSON log file is encoded here, byte for byte as slog's JSON
// handler (no options) writes LogJSON's line, straight from the Record:
// without the handler's per-attribute machinery and without building the
// line's attributes first; it is written for every request and tunnel.
// TestJSONLineMatchesSlog holds the two to the same output (Record.attrs
// is the order of the fields).

// writeJSON writes r to w as one JSON line at now. It reports false,
// having written nothing, when a sniffed field has a kind it does not
// encode (only strings, integers, booleans and durations are); LogJSON
// then writes the line through slog.
func writeJSON(w lockedFile, r *Record, now time.Time) bool {
	bp := lineBufs.Get().(*[]byte)
	b, ok := appendRecordJSON((*bp)[:0], now, r)
	if ok {
		w.Write(b)
	}
	if cap(b) <= maxPooledLine {
		*bp = b
		lineBufs.Put(bp)
	}
	return ok
}

// lineBufs are the buffers lines are encoded in.
var lineBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// maxPooledLine bounds the buffers kept for reuse: a line with a long
// error or target does not pin its buffer in the pool.
const maxPooledLine = 16 << 10

// appendRecordJSON appends the line slog's JSON handler writes for an
// Info record "access" made at t with r.attrs (see writeJSON), field by
// field in the same order.
func appendRecordJSON(b []byte, t time.Time, r *Record) ([]byte, bool) {
	if y := t.Year(); y < 0 || y >= 10000 {
		return b, false // slog notes an error in the line
	}
	b = append(b, `{"time":"`...)
	b = t.Round(0).AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","level":"INFO","msg":"access"`...)
	b = appendString(b, "request_id", r.ID)
	b = appendString(b, "client", r.Client)
	b = appendString(b, "proto", r.Proto)
	switch r.Proto {
	case "http":
		b = appendString(b, "method", r.Method)
		b = appendString(b, "target", r.Target)
		if r.Path != "" {
			b = appendString(b, "path", r.Path)
		}
		if r.User != "" {
			b = appendString(b, "user", r.User)
		}
	case "transparent":
		b = appendString(b, "target", r.Target)
	default:
		b = appendString(b, "cmd", r.Cmd)
		b = appendString(b, "user", r.User)
		b = appendString(b, "target", r.Target)
	}
	if r.Decided {
		b = appendString(b, "verdict", r.Verdict)
		b = appendString(b, "reason", r.Reason)
		b = appendString(b, "rule", r.Rule)
		b = appendString(b, "category", r.Category)
		b = appendString(b, "route", r.Route)
		for _, a := range r.Sniffed {
			var ok bool
			if b, ok = appendAttr(b, a); !ok {
				return b, false
			}
		}
		if r.WouldBlock {
			b = append(b, `,"would_block":true`...)
			b = appendString(b, "would_block_rule", r.WouldBlockRule)
		}
		if r.SafeSearch != "" {
			b = appendString(b, "safesearch", r.SafeSearch)
		}
	} else {
		b = appendString(b, "verdict", "none")
		if r.Reason != "" || r.Proto == "http" {
			b = appendString(b, "reason", r.Reason)
		}
	}
	if r.Proto == "http" || r.Proto == "transparent" && r.Status != 0 {
		b = appendInt(b, "status", int64(r.Status))
	}
	if r.Reply >= 0 {
		b = append(b, `,"reply":"0x`...)
		if r.Reply < 0x10 {
			b = append(b, '0')
		}
		b = strconv.AppendInt(b, int64(r.Reply), 16)
		b = append(b, '"')
	}
	if r.Peer.IsValid() {
		if r.Peer.Zone() == "" { // digits, dots and colons: nothing to escape
			b = append(b, `,"peer":"`...)
			b = r.Peer.AppendTo(b)
			b = append(b, '"')
		} else {
			b = appendString(b, "peer", r.Peer.String())
		}
	}
	b = appendInt(b, "up", r.Up)
	b = appendInt(b, "down", r.Down)
	b = appendInt(b, "dur", int64(r.Duration))
	if r.Cmd == "udp" {
		b = appendInt(b, "udp_blocked", r.UDPBlocked)
		b = appendInt(b, "udp_dropped", r.UDPDropped)
	}
	if r.Err != nil {
		b = appendString(b, "err", r.Err.Error())
	}
	return append(b, '}', '\n'), true
}

// appendString appends the field ,"key":"value"; key needs no escaping.
func appendString(b []byte, key, v string) []byte {
	b = append(b, ',', '"')
	b = append(b, key...)
	b = append(b, '"', ':', '"')
	b = appendEscaped(b, v)
	return append(b, '"')
}

// appendInt appends the field ,"key":n; key needs no escaping.
func appendInt(b []byte, key string, n int64) []byte {
	b = append(b, ',', '"')
	b = append(b, key...)
	b = append(b, '"', ':')
	return strconv.AppendInt(b, n, 10)
}

// appendAttr appends a as slog's JSON handler writes it, or reports false
// for a kind it does not encode.
func appendAttr(b []byte, a slog.Attr) ([]byte, bool) {
	if a.Key == "" {
		return b, false // slog drops or inlines such attributes
	}
	b = append(b, ',', '"')
	b = appendEscaped(b, a.Key)
	b = append(b, '"', ':')
	switch v := a.Value; v.Kind() {
	case slog.KindString:
		b = append(b, '"')
		b = appendEscaped(b, v.String())
		b = append(b, '"')
	case slog.KindInt64:
		b = strconv.AppendInt(b, v.Int64(), 10)
	case slog.KindUint64:
		b = strconv.AppendUint(b, v.Uint64(), 10)
	case slog.KindBool:
		b = strconv.AppendBool(b, v.Bool())
	case slog.KindDuration:
		b = strconv.AppendInt(b, int64(v.Duration()), 10)
	default:
		return b, false
	}
	return b, true
}

const hexDigits = "0123456789abcdef"

// appendEscaped appends s escaped for a JSON string as slog's JSON handler
// escapes it: '"', '\\' and control bytes, invalid UTF-8 as U+FFFD, and
// U+2028 and U+2029.
func appendEscaped(b []byte, s string) []byte {
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= ' ' && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			b = append(b, '\\')
			switch c {
			case '\\', '"':
				b = append(b, c)
			case '\n':
				b = append(b, 'n')
			case '\r':
				b = append(b, 'r')
			case '\t':
				b = append(b, 't')
			default:
				b = append(b, 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	return append(b, s[start:]...)
}
