package server

import (
	"bufio"
	"fmt"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"
)

// plainWriter is the http.ResponseWriter of a request served by
// servePlainLoop. It writes what net/http's server writes for the same
// handler calls, byte for byte (net/http/server.go: response, chunkWriter
// and its writeHeader, which it follows rule by rule; the tests compare
// the two): the status line of the request's version; the handler's
// headers as they were at WriteHeader; Date; a Content-Length when the
// handler ends before the body filled bufferBeforeChunking and before a
// flush, chunked encoding (HTTP/1.1) or a close (HTTP/1.0) otherwise; a
// sniffed Content-Type when none was set; Connection: close or
// keep-alive as net/http decides them; trailers. Head and body go out
// together through out (4 KiB), in one write for a small answer.
//
// The requests it serves have no body, so net/http's request-body rules
// (100-continue, discarding what the handler left unread) do not apply.
type plainWriter struct {
	req           *http.Request
	out           *bufio.Writer // to the client (net/http's conn.bufw)
	stage         *bufio.Writer // the body before the head is final (net/http's response.w)
	ew            *errWriter
	handlerHeader http.Header
	snap          http.Header // the header as of WriteHeader, when it cannot be written then
	status        int
	contentLength int64 // the declared length; -1 when none
	written       int64
	trailers      []string // declared trailers

	calledHeader     bool
	wroteHeader      bool // a non-1xx status was (logically) written
	committed        bool // the head was written to out
	chunking         bool
	handlerDone      bool
	keepAlives       func() bool // false once a shutdown began; asked when the head is written
	wants10KeepAlive bool
	wantsClose       bool
	closeAfterReply  bool

	statusBuf [3]byte
	dateBuf   [len(http.TimeFormat)]byte
	clenBuf   [20]byte
}

// bufferBeforeChunking is net/http's bufferBeforeChunkingSize: a body
// this long, or flushed, is sent before the handler ends.
const bufferBeforeChunking = 2048

// reset readies w for r; the header map of the previous response is
// emptied and used again (the handler keeps no reference to it).
func (w *plainWriter) reset(r *http.Request, out, stage *bufio.Writer, ew *errWriter, keepAlives func() bool) {
	h := w.handlerHeader
	if h == nil {
		h = make(http.Header)
	}
	clear(h)
	*w = plainWriter{
		req: r, out: out, stage: stage, ew: ew, keepAlives: keepAlives,
		handlerHeader: h, contentLength: -1,
		wants10KeepAlive: r.ProtoMajor == 1 && r.ProtoMinor == 0 && hasHeaderToken(headerGet(r.Header, "Connection"), "keep-alive"),
		wantsClose:       r.Close || hasHeaderToken(headerGet(r.Header, "Connection"), "close"),
	}
	stage.Reset((*chunkSink)(w))
}

func (w *plainWriter) Header() http.Header {
	if w.snap == nil && w.wroteHeader && !w.committed {
		w.snap = w.handlerHeader.Clone()
	}
	w.calledHeader = true
	return w.handlerHeader
}

func (w *plainWriter) WriteHeader(code int) {
	if w.wroteHeader {
		return // net/http logs a superfluous call and ignores it
	}
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	if code >= 100 && code <= 199 && code != http.StatusSwitchingProtocols {
		w.statusLine(code)
		w.handlerHeader.WriteSubset(w.out, noBodyHeaders)
		w.out.WriteString("\r\n")
		w.out.Flush()
		return
	}
	w.wroteHeader, w.status = true, code
	h := w.handlerHeader
	cl := headerGet(h, "Content-Length")
	clen, clErr := int64(-1), error(nil)
	if cl != "" {
		if clen, clErr = strconv.ParseInt(cl, 10, 64); clErr == nil && clen < 0 {
			clErr = strconv.ErrRange
		}
	}
	// The head can be written now when nothing the body brings can change
	// it (a valid declared length, no type to sniff): no snapshot to copy.
	_, haveType := h["Content-Type"]
	now := !bodyAllowedForStatus(code) || cl != "" && clErr == nil && (haveType || h.Get("Content-Encoding") != "")
	if w.calledHeader && !now {
		w.snap = h.Clone()
	}
	if cl != "" {
		if clErr == nil {
			w.contentLength = clen
		} else {
			h.Del("Content-Length") // net/http logs it; its snapshot keeps it
		}
	}
	if now {
		w.commit(nil)
	}
}

func (w *plainWriter) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if len(p) == 0 {
		return 0, nil
	}
	if !bodyAllowedForStatus(w.status) {
		return 0, http.ErrBodyNotAllowed
	}
	w.written += int64(len(p))
	if w.contentLength != -1 && w.written > w.contentLength {
		return 0, http.ErrContentLength
	}
	return w.stage.Write(p)
}

// Flush implements http.Flusher.
func (w *plainWriter) Flush() { w.FlushError() }

// FlushError sends what was written (http.ResponseController).
func (w *plainWriter) FlushError() error {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	err := w.stage.Flush()
	if !w.committed {
		w.commit(nil)
	}
	if e2 := w.out.Flush(); err == nil {
		err = e2
	}
	return err
}

// finish ends the response when the handler returned (net/http's
// finishRequest): the rest of the body, the last chunk and the trailers.
func (w *plainWriter) finish() {
	w.handlerDone = true
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	w.stage.Flush()
	if !w.committed {
		w.commit(nil)
	}
	if w.chunking {
		w.out.WriteString("0\r\n")
		if t := w.finalTrailers(); t != nil {
			t.Write(w.out)
		}
		w.out.WriteString("\r\n")
	}
	w.out.Flush()
}

// reusable reports whether the connection may carry another request
// (net/http's shouldReuseConnection).
func (w *plainWriter) reusable() bool {
	if w.closeAfterReply {
		return false
	}
	if w.req.Method != http.MethodHead && w.contentLength != -1 && bodyAllowedForStatus(w.status) && w.contentLength != w.written {
		return false // the answer is not what its head said: out of sync
	}
	return w.ew.err == nil
}

// closeDelimited reports whether the body that was sent ends only with
// the connection (no Content-Length, no chunks), so that a cut in it can
// only be told by a reset.
func (w *plainWriter) closeDelimited() bool {
	return w.committed && !w.chunking && w.contentLength == -1 &&
		w.req.Method != http.MethodHead && bodyAllowedForStatus(w.status)
}

// chunkSink is where stage writes: the head goes out before the first
// bytes of the body (net/http's chunkWriter).
type chunkSink plainWriter

func (cw *chunkSink) Write(p []byte) (n int, err error) {
	w := (*plainWriter)(cw)
	if !w.committed {
		w.commit(p)
	}
	if w.req.Method == http.MethodHead {
		return len(p), nil // eaten
	}
	if w.chunking {
		var b [18]byte
		w.out.Write(strconv.AppendInt(b[:0], int64(len(p)), 16))
		if _, err = w.out.WriteString("\r\n"); err != nil {
			w.ew.c.Close()
			return 0, err
		}
	}
	n, err = w.out.Write(p)
	if w.chunking && err == nil {
		_, err = w.out.WriteString("\r\n")
	}
	if err != nil {
		w.ew.c.Close()
	}
	return n, err
}

// commit writes the head to out, p being the first bytes of the body
// (for the Content-Type and, at the handler's end, the Content-Length):
// net/http's chunkWriter.writeHeader, rule for rule.
func (w *plainWriter) commit(p []byte) {
	w.committed = true
	isHEAD := w.req.Method == http.MethodHead
	header := w.snap
	owned := header != nil
	if !owned {
		header = w.handlerHeader
	}
	var exclude map[string]bool
	del := func(key string) {
		if owned {
			header.Del(key)
			return
		}
		if _, ok := header[key]; !ok {
			return
		}
		if exclude == nil {
			exclude = map[string]bool{}
		}
		exclude[key] = true
	}
	var extra extraHeader
	// As net/http's server, whether keep-alives are on is asked now: a
	// shutdown that began while the handler waited makes this answer the
	// connection's last and say so.
	keepAlives := w.keepAlives()

	trailers := false
	for k := range header {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			if exclude == nil {
				exclude = map[string]bool{}
			}
			exclude[k] = true
			trailers = true
		}
	}
	for _, v := range header["Trailer"] {
		trailers = true
		for f := range strings.SplitSeq(v, ",") {
			if f = textproto.TrimString(f); f != "" {
				if k := http.CanonicalHeaderKey(f); httpguts.ValidTrailerHeader(k) {
					w.trailers = append(w.trailers, k)
				}
			}
		}
	}

	te := headerGet(header, "Transfer-Encoding")
	hasTE := te != ""
	_, hasCLKey := header["Content-Length"]
	if w.handlerDone && !trailers && !hasTE && bodyAllowedForStatus(w.status) && !hasCLKey && (!isHEAD || len(p) > 0) {
		w.contentLength = int64(len(p))
		extra.contentLength = strconv.AppendInt(w.clenBuf[:0], int64(len(p)), 10)
	}
	if w.wants10KeepAlive && keepAlives {
		if headerGet(header, "Content-Length") != "" && headerGet(header, "Connection") == "keep-alive" {
			w.closeAfterReply = false
		}
	}
	hasCL := w.contentLength != -1
	if w.wants10KeepAlive && (isHEAD || hasCL || !bodyAllowedForStatus(w.status)) {
		if _, ok := header["Connection"]; !ok {
			extra.connection = "keep-alive"
		}
	} else if !w.req.ProtoAtLeast(1, 1) || w.wantsClose {
		w.closeAfterReply = true
	}
	if headerGet(header, "Connection") == "close" || !keepAlives {
		w.closeAfterReply = true
	}

	code := w.status
	if bodyAllowedForStatus(code) {
		_, haveType := header["Content-Type"]
		if header.Get("Content-Encoding") == "" && !haveType && !hasTE && len(p) > 0 {
			extra.contentType = http.DetectContentType(p)
		}
	} else {
		del("Content-Length")
		del("Transfer-Encoding")
		if code == http.StatusNotModified {
			del("Content-Type")
		}
	}
	if _, ok := header["Date"]; !ok {
		extra.date = time.Now().UTC().AppendFormat(w.dateBuf[:0], http.TimeFormat)
	}
	if hasCL && hasTE && te != "identity" {
		del("Content-Length")
		hasCL = false
	}
	switch {
	case isHEAD || !bodyAllowedForStatus(code) || code == http.StatusNoContent:
		del("Transfer-Encoding")
	case hasCL:
		del("Transfer-Encoding")
	case w.req.ProtoAtLeast(1, 1):
		if hasTE && te == "identity" {
			w.chunking = false
			w.closeAfterReply = true
			del("Transfer-Encoding")
		} else {
			w.chunking = true
			extra.transferEncoding = "chunked"
			if hasTE && te == "chunked" {
				del("Transfer-Encoding")
			}
		}
	default:
		w.closeAfterReply = true
		del("Transfer-Encoding")
	}
	if w.chunking {
		del("Content-Length")
	}
	var snapConn string
	if owned {
		snapConn = headerGet(w.snap, "Connection")
	} else if w.calledHeader {
		snapConn = headerGet(header, "Connection")
	}
	if w.closeAfterReply && (!keepAlives || !hasHeaderToken(snapConn, "close")) && !isProtocolSwitch(code, header) {
		del("Connection")
		if w.req.ProtoAtLeast(1, 1) {
			extra.connection = "close"
		}
	}
	w.statusLine(code)
	header.WriteSubset(w.out, exclude)
	extra.write(w.out)
	w.out.WriteString("\r\n")
}

// statusLine writes the status line (net/http's writeStatusLine).
func (w *plainWriter) statusLine(code int) {
	if w.req.ProtoAtLeast(1, 1) {
		w.out.WriteString("HTTP/1.1 ")
	} else {
		w.out.WriteString("HTTP/1.0 ")
	}
	if text := http.StatusText(code); text != "" {
		w.out.Write(strconv.AppendInt(w.statusBuf[:0], int64(code), 10))
		w.out.WriteByte(' ')
		w.out.WriteString(text)
		w.out.WriteString("\r\n")
	} else {
		fmt.Fprintf(w.out, "%03d status code %d\r\n", code, code)
	}
}

// finalTrailers returns the trailers the handler set, or nil.
func (w *plainWriter) finalTrailers() http.Header {
	var t http.Header
	for k, vv := range w.handlerHeader {
		if kk, found := strings.CutPrefix(k, http.TrailerPrefix); found {
			if t == nil {
				t = make(http.Header)
			}
			t[kk] = vv
		}
	}
	for _, k := range w.trailers {
		if t == nil {
			t = make(http.Header)
		}
		for _, v := range w.handlerHeader[k] {
			t.Add(k, v)
		}
	}
	return t
}

// extraHeader are the headers commit adds, in net/http's order.
type extraHeader struct {
	contentType, connection, transferEncoding string
	date, contentLength                       []byte
}

func (h extraHeader) write(w *bufio.Writer) {
	if h.date != nil {
		w.WriteString("Date: ")
		w.Write(h.date)
		w.WriteString("\r\n")
	}
	if h.contentLength != nil {
		w.WriteString("Content-Length: ")
		w.Write(h.contentLength)
		w.WriteString("\r\n")
	}
	for _, kv := range [...][2]string{{"Content-Type", h.contentType}, {"Connection", h.connection}, {"Transfer-Encoding", h.transferEncoding}} {
		if kv[1] != "" {
			w.WriteString(kv[0])
			w.WriteString(": ")
			w.WriteString(kv[1])
			w.WriteString("\r\n")
		}
	}
}

// noBodyHeaders are left out of a 1xx head.
var noBodyHeaders = map[string]bool{"Content-Length": true, "Transfer-Encoding": true}

// bodyAllowedForStatus reports whether a response with status may have a
// body (net/http's, which counts 101 among the 1xx).
func bodyAllowedForStatus(status int) bool {
	return !(status >= 100 && status <= 199 || status == http.StatusNoContent || status == http.StatusNotModified)
}

// isProtocolSwitch reports a 101 that switches (Upgrade and Connection:
// Upgrade).
func isProtocolSwitch(code int, h http.Header) bool {
	return code == http.StatusSwitchingProtocols && h.Get("Upgrade") != "" &&
		httpguts.HeaderValuesContainsToken(h["Connection"], "Upgrade")
}

// headerGet returns the first value of key, not canonicalized (net/http's
// Header.get).
func headerGet(h http.Header, key string) string {
	if v := h[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// hasHeaderToken reports whether token (lower case) appears in v, ASCII
// case-insensitive, between spaces, commas or tabs (net/http's hasToken).
func hasHeaderToken(v, token string) bool {
	if len(token) > len(v) || token == "" {
		return false
	}
	if v == token {
		return true
	}
	boundary := func(b byte) bool { return b == ' ' || b == ',' || b == '\t' }
	for sp := 0; sp <= len(v)-len(token); sp++ {
		if sp > 0 && !boundary(v[sp-1]) {
			continue
		}
		if end := sp + len(token); end != len(v) && !boundary(v[end]) {
			continue
		}
		if strings.EqualFold(v[sp:sp+len(token)], token) {
			return true
		}
	}
	return false
}
