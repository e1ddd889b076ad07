package server

import (
	"bytes"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

// plainHandlers are what a handler can do to a response: each is served
// by net/http's server and by plainWriter, and the bytes must be the same.
var plainHandlers = map[string]http.HandlerFunc{
	"forward: length, type, flushed writes": func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Length", "1024")
		h.Set("Content-Type", "application/octet-stream")
		h.Set("X-Origin", "a")
		w.WriteHeader(http.StatusOK)
		w.Write(bytes.Repeat([]byte("x"), 1000))
		http.NewResponseController(w).Flush()
		w.Write(bytes.Repeat([]byte("y"), 24))
	},
	"length, no type (nil)": func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "2")
		w.Header()["Content-Type"] = nil
		w.Write([]byte("ab"))
	},
	"sniffed, length computed": func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "<html><body>hi</body></html>")
	},
	"long, no length": func(w http.ResponseWriter, r *http.Request) {
		w.Write(bytes.Repeat([]byte("z"), 3000))
	},
	"flushed, no length": func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "first")
		w.(http.Flusher).Flush()
		io.WriteString(w, "second")
	},
	"trailers declared and late": func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Sum, Content-Length")
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, "body")
		w.Header().Set("X-Sum", "1")
		w.Header().Set(http.TrailerPrefix+"X-Late", "2")
	},
	"204 with length and type": func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "5")
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(http.StatusNoContent)
		io.WriteString(w, "never")
	},
	"304 with length and type": func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "5")
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Etag", `"x"`)
		w.WriteHeader(http.StatusNotModified)
	},
	"103 then 200": func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</a.css>; rel=preload")
		w.Header().Set("Content-Length", "3")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "abc")
	},
	"short of its length": func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "10")
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "five!")
	},
	"beyond its length": func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "3")
		w.Header().Set("Content-Type", "text/plain")
		if _, err := io.WriteString(w, "three"); err != http.ErrContentLength {
			panic("want ErrContentLength")
		}
	},
	"handler closes": func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		io.WriteString(w, "bye")
	},
	"handler keeps HTTP/1.0": func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "keep-alive")
		w.Header().Set("Content-Length", "2")
		io.WriteString(w, "ok")
	},
	"bad length": func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "abc")
		io.WriteString(w, "ab")
	},
	"identity encoding": func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Transfer-Encoding", "identity")
		io.WriteString(w, "ab")
	},
	"chunked set by handler": func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Transfer-Encoding", "chunked")
		w.Header().Set("Content-Length", "2")
		io.WriteString(w, "ab")
	},
	"nothing": func(w http.ResponseWriter, r *http.Request) {},
	"header after WriteHeader": func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Before", "1")
		w.WriteHeader(http.StatusCreated)
		w.Header().Set("X-After", "1")
		io.WriteString(w, "a")
	},
	"unknown status, no reason": func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(599)
	},
	"error text": func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Content-Length", "6")
		w.WriteHeader(http.StatusBadGateway)
		io.WriteString(w, "gone!\n")
	},
	"aborted mid-body": func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100")
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "part")
		http.NewResponseController(w).Flush()
		panic(http.ErrAbortHandler)
	},
	"values to clean": func(w http.ResponseWriter, r *http.Request) {
		w.Header()["X-Multi"] = []string{"a", "b"}
		w.Header().Set("X-Space", " padded ")
		io.WriteString(w, "v")
	},
}

// plainRequests are the requests each handler answers.
var plainRequests = []string{
	"GET http://o.test/p HTTP/1.1\r\nHost: o.test\r\n\r\n",
	"GET http://o.test/p HTTP/1.1\r\nHost: o.test\r\nConnection: close\r\n\r\n",
	"GET http://o.test/p HTTP/1.1\r\nHost: o.test\r\nConnection: foo, Close\r\n\r\n",
	"GET http://o.test/p HTTP/1.0\r\n\r\n",
	"GET http://o.test/p HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
	"HEAD http://o.test/p HTTP/1.1\r\nHost: o.test\r\n\r\n",
	"HEAD http://o.test/p HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
}

// TestPlainWriterAsNetHTTP serves every request of plainRequests with
// every handler of plainHandlers through net/http's server and through
// servePlainLoop's writer (serveOne), with keep-alives on and off (a
// shutdown), and wants the same bytes (but the Date) and the same choice
// to keep the connection or close it.
func TestPlainWriterAsNetHTTP(t *testing.T) {
	for _, keepAlives := range []bool{true, false} {
		for name, h := range plainHandlers {
			for _, req := range plainRequests {
				want, wantKeep := viaNetHTTP(t, h, req, keepAlives)
				got, gotKeep := viaPlainWriter(t, h, req, keepAlives)
				if got != want || gotKeep != wantKeep {
					t.Errorf("%s, keep-alives %v, %q:\nnet/http (keep %v):\n%q\nplainWriter (keep %v):\n%q",
						name, keepAlives, req, wantKeep, want, gotKeep, got)
				}
			}
		}
	}
}

var dateLine = regexp.MustCompile(`(?m)^Date: [^\r]*\r$`)

// nextRequest follows each request: answered (299) only when the server
// kept the connection.
const nextRequest = "GET http://o.test/next HTTP/1.1\r\nHost: o.test\r\nConnection: close\r\n\r\n"

// viaNetHTTP returns the answer of net/http's server to req, and whether
// it kept the connection (it answered the request that followed).
func viaNetHTTP(t *testing.T, h http.HandlerFunc, req string, keepAlives bool) (string, bool) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/next" {
			w.WriteHeader(299)
			return
		}
		h(w, r)
	}), ErrorLog: log.New(io.Discard, "", 0)}
	srv.SetKeepAlivesEnabled(keepAlives)
	done := make(chan struct{})
	go func() { srv.Serve(ln); close(done) }()
	defer func() { srv.Close(); <-done }()
	out := exchangeAll(t, ln.Addr().String(), req+nextRequest, nil)
	out = dateLine.ReplaceAllString(out, "Date: X\r")
	if i := strings.Index(out, "HTTP/1.1 299 "); i >= 0 {
		return out[:i], true
	}
	return out, false
}

// viaPlainWriter returns the answer serveOne writes for req with h, and
// whether it would keep the connection.
func viaPlainWriter(t *testing.T, h http.HandlerFunc, req string, keepAlives bool) (string, bool) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var keep bool
	serverDone := make(chan struct{})
	go func() {
		defer close(serverDone)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, 4096)
		n, _ := c.Read(buf)
		r, _ := readPlain(buf[:n])
		if r == nil {
			t.Errorf("readPlain refused %q", buf[:n])
			return
		}
		l := loops.Get().(*plainLoop)
		defer l.release()
		l.ew.c = c
		keep = l.serveOne(r, func() bool { return keepAlives }, h, slog.New(slog.DiscardHandler))
	}()
	out := exchangeAll(t, ln.Addr().String(), req, serverDone)
	return dateLine.ReplaceAllString(out, "Date: X\r"), keep
}

// exchangeAll sends req and reads until the server closes (after done,
// when not nil).
func exchangeAll(t *testing.T, addr, req string, done chan struct{}) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("reading the answer to %q: %v (got %q)", req, err, out)
	}
	if done != nil {
		<-done
	}
	return string(out)
}
