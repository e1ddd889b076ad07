package server

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// BenchmarkKeepAliveGet sends 1 KiB GETs on one kept connection through
// the whole server (decision, keep-alive pool, access record), served on
// the worker (loop) or by net/http's server (http: the same request with
// an obs-fold header line, which the loop leaves to it).
func BenchmarkKeepAliveGet(b *testing.B) {
	body := strings.Repeat("x", 1024)
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1024")
		io.WriteString(w, body)
	}))
	defer origin.Close()
	for _, bc := range []struct{ name, extra string }{
		{"loop", ""},
		{"http", "X-Fold: a\r\n b\r\n"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			c, err := net.Dial("tcp", benchServer(b))
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Minute))
			req := fmt.Sprintf("GET %s/x HTTP/1.1\r\nHost: x\r\n%s\r\n", origin.URL, bc.extra)
			br := bufio.NewReader(c)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				io.WriteString(c, req)
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					b.Fatal(err)
				}
				if n, _ := io.Copy(io.Discard, resp.Body); n != 1024 {
					b.Fatalf("body of %d bytes", n)
				}
			}
		})
	}
}

// benchServer runs a server that allows everything until the benchmark
// ends, and returns its address.
func benchServer(b *testing.B) string {
	cfg := filepath.Join(b.TempDir(), "sluice.yaml")
	if err := os.WriteFile(cfg, []byte("default: allow\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	lb := &logBuf{}
	s, err := New(Options{Config: cfg, Listen: []string{"127.0.0.1:0"}, NoSignals: true, Logger: slog.New(slog.NewTextHandler(lb, nil))})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	b.Cleanup(func() { cancel(); <-done })
	rx := regexp.MustCompile(`listening on ([0-9.:]+)`)
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if m := rx.FindStringSubmatch(lb.String()); m != nil {
			return m[1]
		}
	}
	b.Fatal("the server did not listen")
	return ""
}
