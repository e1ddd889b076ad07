package accesslog

import (
	"log/slog"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// A line to a JSON log file is encoded here, byte for byte as slog's JSON
// handler (no options) writes LogJSON's line, without the handler's
// per-attribute machinery: it is written for every request and tunnel.
// TestJSONLineMatchesSlog holds the two to the same output.

// writeJSON writes r to w as one JSON line at now. It reports false,
// having written nothing, when a field has a kind it does not encode
// (only strings, integers, booleans and durations are); LogJSON then
// writes the line through slog.
func writeJSON(w lockedFile, r *Record, now time.Time) bool {
	a := attrBufs.Get().(*[]slog.Attr)
	*a = r.attrs((*a)[:0])
	bp := lineBufs.Get().(*[]byte)
	b, ok := appendJSONLine((*bp)[:0], now, *a)
	if ok {
		w.Write(b)
	}
	clear(*a)
	attrBufs.Put(a)
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

// appendJSONLine appends the line slog's JSON handler writes for an Info
// record "access" made at t with attrs (see writeJSON).
func appendJSONLine(b []byte, t time.Time, attrs []slog.Attr) ([]byte, bool) {
	if y := t.Year(); y < 0 || y >= 10000 {
		return b, false // slog notes an error in the line
	}
	b = append(b, `{"time":"`...)
	b = t.Round(0).AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","level":"INFO","msg":"access"`...)
	for _, a := range attrs {
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
	}
	return append(b, '}', '\n'), true
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
