package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluiceproxy/sluice/rules"
)

const goodList = "# test list\nads.example\ntracker.example\n.cdn.example\n"

// listServer is a loopback origin whose answer a test can change between
// requests. It records the validators each request carried.
type listServer struct {
	*httptest.Server
	handler  atomic.Pointer[http.HandlerFunc]
	requests atomic.Int64
	lastINM  atomic.Pointer[string]
}

func newListServer(t *testing.T) *listServer {
	t.Helper()
	ls := &listServer{}
	ls.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ls.requests.Add(1)
		inm := r.Header.Get("If-None-Match")
		ls.lastINM.Store(&inm)
		(*ls.handler.Load())(w, r)
	}))
	t.Cleanup(ls.Close)
	ls.set(serveList(goodList, `"v1"`))
	return ls
}

func (ls *listServer) set(h http.HandlerFunc) { ls.handler.Store(&h) }

// serveList answers with body, an ETag and a Last-Modified, and honours
// If-None-Match and If-Modified-Since with 304 (http.ServeContent).
func serveList(body, etag string) http.HandlerFunc {
	mod := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ETag", etag)
		http.ServeContent(w, r, "list.txt", mod, strings.NewReader(body))
	}
}

func httpStatus(code int) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { http.Error(w, "nope", code) }
}

// testSource returns a config whose cache lives in a temporary folder and a
// URL source on ls.
func testSource(t *testing.T, ls *listServer) (*rules.Config, rules.Source) {
	t.Helper()
	dir := t.TempDir()
	cfg := &rules.Config{File: filepath.Join(dir, "sluice.yaml")}
	return cfg, rules.Source{URL: ls.URL + "/list.txt", Refresh: time.Hour}
}

func testFetcher(t *testing.T, cfg *rules.Config) *Fetcher {
	t.Helper()
	c, err := NewFetchClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &Fetcher{Client: c, Logger: slog.New(slog.DiscardHandler)}
}

func readCache(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestFetch200(t *testing.T) {
	ls := newListServer(t)
	cfg, src := testSource(t, ls)
	f := testFetcher(t, cfg)
	var calls int
	var last, total int64
	res, err := f.Fetch(t.Context(), cfg, src, func(read, tot int64) { calls++; last, total = read, tot })
	if err != nil {
		t.Fatal(err)
	}
	if !res.Changed || res.Status != 200 || res.Entries != 3 || res.Format != rules.FormatPlain || res.Bytes != int64(len(goodList)) {
		t.Errorf("result = %+v", res)
	}
	if res.File != cfg.CachePath(src) {
		t.Errorf("file = %s, want %s", res.File, cfg.CachePath(src))
	}
	if got := readCache(t, res.File); got != goodList {
		t.Errorf("cache file = %q", got)
	}
	if calls == 0 || last != int64(len(goodList)) || total != int64(len(goodList)) {
		t.Errorf("progress: %d calls, last %d of %d", calls, last, total)
	}
	m, err := ReadFetchMeta(cfg, src)
	if err != nil {
		t.Fatal(err)
	}
	if m.ETag != `"v1"` || m.LastModified == "" || m.FetchedAt.IsZero() || m.LastError != "" || m.Entries != 3 {
		t.Errorf("meta = %+v", m)
	}
	// The cache is what the rules loader reads.
	set, err := rules.LoadSet(&rules.Config{File: cfg.File, Categories: map[string][]rules.Source{"ads": {src}}})
	if err != nil {
		t.Fatal(err)
	}
	if cl := set.Categories["ads"]; len(cl.Block) != 3 || cl.Sources[0].Err != nil {
		t.Errorf("loaded %v, err %v", cl.Block, cl.Sources[0].Err)
	}
	// No temporary file is left behind.
	ents, _ := os.ReadDir(filepath.Dir(res.File))
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".tmp") {
			t.Errorf("left over: %s", e.Name())
		}
	}
}

func TestFetch304(t *testing.T) {
	ls := newListServer(t)
	cfg, src := testSource(t, ls)
	f := testFetcher(t, cfg)
	if _, err := f.Fetch(t.Context(), cfg, src, nil); err != nil {
		t.Fatal(err)
	}
	if inm := *ls.lastINM.Load(); inm != "" {
		t.Errorf("first fetch sent If-None-Match %q", inm)
	}
	file := cfg.CachePath(src)
	before, _ := os.Stat(file)
	m1, _ := ReadFetchMeta(cfg, src)

	res, err := f.Fetch(t.Context(), cfg, src, nil)
	if err != nil {
		t.Fatal(err)
	}
	if inm := *ls.lastINM.Load(); inm != `"v1"` {
		t.Errorf("second fetch sent If-None-Match %q, want the ETag", inm)
	}
	if res.Status != http.StatusNotModified || res.Changed {
		t.Errorf("result = %+v, want 304 unchanged", res)
	}
	after, _ := os.Stat(file)
	if !os.SameFile(before, after) || !after.ModTime().Equal(before.ModTime()) {
		t.Error("cache file was replaced on 304")
	}
	m2, _ := ReadFetchMeta(cfg, src)
	if m2.ETag != `"v1"` || m2.FetchedAt.Before(m1.FetchedAt) || m2.LastError != "" || m2.Entries != 3 {
		t.Errorf("meta after 304 = %+v", m2)
	}
}

// TestFetchFailureKeepsCopy covers every way a fetch fails after a good
// one: the last good copy stays byte for byte and the error is recorded.
func TestFetchFailureKeepsCopy(t *testing.T) {
	big := strings.Repeat("a-long-domain-name-for-padding.example\n", 200) // ~7.8 KB
	tests := []struct {
		name    string
		handler http.HandlerFunc
		max     int64
		timeout time.Duration
		wantErr string
		is      error
	}{
		{name: "500", handler: httpStatus(500), wantErr: "HTTP 500"},
		{name: "404", handler: httpStatus(404), wantErr: "HTTP 404"},
		{name: "html page", handler: serveList("<html>\n<body>\n<h1>Service unavailable</h1>\n</body>\n</html>\n", `"x"`), wantErr: "not a usable list"},
		{name: "binary", handler: serveList(string(bytes.Repeat([]byte{0, 0xff, 0x13, '\n', '<', 0x80}, 3000)), `"x"`), wantErr: "not a usable list"},
		{name: "empty", handler: serveList("# nothing here\n", `"x"`), wantErr: "no entry"},
		{name: "oversize announced", handler: serveList(big, `"x"`), max: 1024, is: ErrListTooLarge},
		{name: "oversize streamed", handler: serveEndless, max: 1024, is: ErrListTooLarge},
		{name: "timeout", handler: serveStall, timeout: 200 * time.Millisecond, is: context.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ls := newListServer(t)
			cfg, src := testSource(t, ls)
			f := testFetcher(t, cfg)
			if _, err := f.Fetch(t.Context(), cfg, src, nil); err != nil {
				t.Fatal(err)
			}
			file := cfg.CachePath(src)
			ls.set(tt.handler)
			f.MaxBytes = tt.max
			ctx := t.Context()
			if tt.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.timeout)
				defer cancel()
			}
			res, err := f.Fetch(ctx, cfg, src, nil)
			if err == nil {
				t.Fatalf("no error; result %+v", res)
			}
			if tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("err = %v, want it to contain %q", err, tt.wantErr)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("err = %v, want errors.Is %v", err, tt.is)
			}
			if tt.max > 0 && res.Bytes > tt.max+1 {
				t.Errorf("read %d bytes with a cap of %d: the cap was not enforced while streaming", res.Bytes, tt.max)
			}
			if res.Changed {
				t.Error("Changed on failure")
			}
			if got := readCache(t, file); got != goodList {
				t.Errorf("last good copy lost: %q", got)
			}
			m, err2 := ReadFetchMeta(cfg, src)
			if err2 != nil {
				t.Fatal(err2)
			}
			if m.LastError != err.Error() || m.ETag != `"v1"` || m.Entries != 3 || m.LastAttempt.Before(m.FetchedAt) {
				t.Errorf("meta = %+v", m)
			}
			ents, _ := os.ReadDir(filepath.Dir(file))
			for _, e := range ents {
				if strings.HasSuffix(e.Name(), ".tmp") {
					t.Errorf("left over: %s", e.Name())
				}
			}
			// The next good fetch clears the error.
			ls.set(serveList(goodList+"new.example\n", `"v2"`))
			f.MaxBytes = 0
			res, err = f.Fetch(t.Context(), cfg, src, nil)
			if err != nil || !res.Changed || res.Entries != 4 {
				t.Fatalf("recovery: %+v, %v", res, err)
			}
			if m, _ := ReadFetchMeta(cfg, src); m.LastError != "" || m.ETag != `"v2"` {
				t.Errorf("meta after recovery = %+v", m)
			}
		})
	}
}

// serveEndless streams valid list lines without a Content-Length until the
// client goes away (bounded at 64 MiB).
func serveEndless(w http.ResponseWriter, r *http.Request) {
	chunk := []byte(strings.Repeat("streamed.example\n", 1024))
	for sent := 0; sent < 64<<20; sent += len(chunk) {
		if _, err := w.Write(chunk); err != nil {
			return
		}
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		if r.Context().Err() != nil {
			return
		}
	}
}

// serveStall sends the headers and part of a list, then waits for the client to give up.
func serveStall(w http.ResponseWriter, r *http.Request) {
	io.WriteString(w, "partial.example\n")
	w.(http.Flusher).Flush()
	<-r.Context().Done()
}

func TestFetchClientTimeout(t *testing.T) {
	ls := newListServer(t)
	cfg, src := testSource(t, ls)
	f := testFetcher(t, cfg)
	if _, err := f.Fetch(t.Context(), cfg, src, nil); err != nil {
		t.Fatal(err)
	}
	ls.set(serveStall)
	f.Client.Timeout = 200 * time.Millisecond
	if _, err := f.Fetch(t.Context(), cfg, src, nil); err == nil {
		t.Fatal("no error")
	}
	if got := readCache(t, cfg.CachePath(src)); got != goodList {
		t.Errorf("last good copy lost: %q", got)
	}
}

// TestFetchFirstStartOffline: no cache and no network gives an error, a
// sidecar naming it, no cache file, and a config that still loads with the
// category empty.
func TestFetchFirstStartOffline(t *testing.T) {
	ls := newListServer(t)
	cfg, src := testSource(t, ls)
	f := testFetcher(t, cfg)
	ls.Close() // nothing listens any more
	if _, err := f.Fetch(t.Context(), cfg, src, nil); err == nil {
		t.Fatal("no error")
	}
	if exists(cfg.CachePath(src)) {
		t.Error("cache file created")
	}
	m, err := ReadFetchMeta(cfg, src)
	if err != nil || m.LastError == "" || !m.FetchedAt.IsZero() {
		t.Errorf("meta = %+v, %v", m, err)
	}
	cfg.Categories = map[string][]rules.Source{"ads": {src}}
	set, err := rules.LoadSet(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if cl := set.Categories["ads"]; len(cl.Block) != 0 || cl.Sources[0].Err == nil {
		t.Errorf("category = %+v", cl)
	}
}

func TestReadFetchMetaMissing(t *testing.T) {
	cfg := &rules.Config{File: filepath.Join(t.TempDir(), "sluice.yaml")}
	_, err := ReadFetchMeta(cfg, rules.Source{URL: "http://127.0.0.1:1/x"})
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("err = %v, want fs.ErrNotExist", err)
	}
	if _, err := ReadFetchMeta(cfg, rules.Source{Path: "/x"}); err == nil {
		t.Error("a path source has no sidecar")
	}
}

// TestRefreshDue runs one round of RefreshLoop's work on a server whose
// config has an optional remote source (New does not wait for it): it is
// fetched, the rules reload, and the next round asks nothing because the
// source is not due.
func TestRefreshDue(t *testing.T) {
	ls := newListServer(t)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "sluice.yaml")
	conf := fmt.Sprintf("categories:\n  ads:\n    - url: %s/list.txt\n      refresh: 1h\n      optional: true\nrules:\n  - block: category:ads\n", ls.URL)
	if err := os.WriteFile(cfgPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := New(Options{Config: cfgPath, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if n := s.Status().Categories["ads"]; n != 0 {
		t.Fatalf("ads has %d entries before any fetch", n)
	}
	due := map[string]time.Time{}
	wait := s.refreshDue(t.Context(), s.state.Load(), due)
	if ls.requests.Load() != 1 {
		t.Errorf("%d requests, want 1", ls.requests.Load())
	}
	if st := s.Status(); st.Reloads != 1 || st.Categories["ads"] != 3 {
		t.Errorf("after refresh: %+v", st)
	}
	if wait <= 0 || wait > refreshPoll {
		t.Errorf("wait = %v", wait)
	}
	if when := due[ls.URL+"/list.txt"]; time.Until(when) < 50*time.Minute {
		t.Errorf("next fetch at %v, want about an hour from now", when)
	}
	s.refreshDue(t.Context(), s.state.Load(), due)
	if ls.requests.Load() != 1 || s.Status().Reloads != 1 {
		t.Errorf("second round: %d requests, %d reloads; want nothing done", ls.requests.Load(), s.Status().Reloads)
	}
	// A restarted server knows from the sidecar that the source is fresh.
	if got := firstDue(s.state.Load().cfg, s.state.Load().cfg.Categories["ads"][0], time.Hour); time.Until(got) < 50*time.Minute {
		t.Errorf("firstDue = %v, want about an hour from now", got)
	}
}

// TestRefreshLoopStops checks that the loop returns when its context ends.
func TestRefreshLoopStops(t *testing.T) {
	s, err := New(Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { s.RefreshLoop(ctx); close(done) }()
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("RefreshLoop did not return after cancel")
	}
}

func FuzzReadFetchMeta(f *testing.F) {
	f.Add([]byte(`{"etag":"\"v1\"","last_modified":"Wed, 01 May 2024 12:00:00 GMT","fetched_at":"2024-05-01T12:00:00Z"}`))
	f.Add([]byte(`{"last_error":"x","last_attempt":"bad"}`))
	f.Add([]byte(`not json`))
	dir := f.TempDir()
	cfg := &rules.Config{File: filepath.Join(dir, "sluice.yaml")}
	src := rules.Source{URL: "http://127.0.0.1:1/list"}
	if err := os.MkdirAll(filepath.Dir(cfg.CachePath(src)), 0o755); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(metaPath(cfg, src), data, 0o644); err != nil {
			t.Fatal(err)
		}
		m, err := ReadFetchMeta(cfg, src)
		if err != nil && m != (FetchMeta{}) {
			t.Errorf("error %v with a non-zero meta %+v", err, m)
		}
	})
}

// TestFetchErrorMasksPassword: a failed download names its URL with the
// password masked as everywhere in Sluice (u:xxxxx@), not net/http's ***.
func TestFetchErrorMasksPassword(t *testing.T) {
	ls := newListServer(t)
	cfg, src := testSource(t, ls)
	ls.Close() // nothing listens any more
	src.URL = strings.Replace(src.URL, "http://", "http://u:hunter2@", 1)
	_, err := testFetcher(t, cfg).Fetch(t.Context(), cfg, src, nil)
	if err == nil {
		t.Fatal("no error")
	}
	if msg := err.Error(); !strings.Contains(msg, "http://u:xxxxx@127.0.0.1") || strings.Contains(msg, "***") || strings.Contains(msg, "hunter2") {
		t.Errorf("error %q: want the URL with u:xxxxx@", msg)
	}
	if m, _ := ReadFetchMeta(cfg, src); strings.Contains(m.LastError, "hunter2") || strings.Contains(m.LastError, "***") {
		t.Errorf("last error %q", m.LastError)
	}
}
