package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/sluiceproxy/sluice/rules"
)

// Limits and periods of remote list downloads.
const (
	// DefaultMaxListBytes is the size cap of one downloaded list when
	// Fetcher.MaxBytes is zero.
	DefaultMaxListBytes = 256 << 20
	// FetchTimeout bounds one download made with NewFetchClient, headers
	// and body together.
	FetchTimeout = 10 * time.Minute
	// retryAfterFailure is how soon RefreshLoop tries a failed source
	// again, unless its refresh period is shorter.
	retryAfterFailure = 30 * time.Minute
	// refreshPoll is the longest RefreshLoop sleeps, so that sources added
	// by a reload are fetched soon after.
	refreshPoll = time.Minute
)

// ErrListTooLarge means a download went over the size cap.
var ErrListTooLarge = errors.New("server: remote list larger than the size cap")

// Fetcher downloads remote category sources into the cache folder. A source
// is fetched with a conditional GET, streamed to a temporary file beside its
// cache file, checked to be a usable list, and only then renamed into place;
// on any failure the last good copy stays and the error is recorded in the
// source's sidecar file (the cache file's name plus ".meta"), which `sluice
// list` shows. A Fetcher is safe for concurrent use on different sources.
type Fetcher struct {
	// Client makes the requests. Nil means a client through the config's
	// default route (NewFetchClient).
	Client *http.Client
	// MaxBytes caps the size of one list; the cap is enforced while the
	// body streams in. Zero means DefaultMaxListBytes (256 MiB).
	MaxBytes int64
	// Logger gets one line per fetch. Nil means nothing is logged.
	Logger *slog.Logger
}

// FetchResult reports one fetch.
type FetchResult struct {
	// File is the cache file of the source.
	File string
	// Status is the HTTP status of the answer: 200, or 304 when the cached
	// copy is still current.
	Status int
	// Changed reports that a new copy was stored.
	Changed bool
	// Bytes counts the bytes of the body read.
	Bytes int64
	// Entries counts the entries of the new copy; zero unless Changed.
	Entries int
	// Format is the detected list format of the new copy; "" unless Changed.
	Format string
}

// FetchMeta is the sidecar of a cached remote list, kept as JSON beside the
// cache file: the validators for the next conditional GET and the outcome
// of the last attempt.
type FetchMeta struct {
	// URL is the source's URL, user info redacted.
	URL string `json:"url,omitempty"`
	// ETag is the validator sent back in If-None-Match.
	ETag string `json:"etag,omitempty"`
	// LastModified is the validator sent back in If-Modified-Since.
	LastModified string `json:"last_modified,omitempty"`
	// FetchedAt is when the cached copy was last downloaded or confirmed
	// current (a 304). Zero when it never was.
	FetchedAt time.Time `json:"fetched_at,omitzero"`
	// Bytes and Entries describe the cached copy.
	Bytes   int64 `json:"bytes,omitempty"`
	Entries int   `json:"entries,omitempty"`
	// LastAttempt is when the source was last tried, successfully or not.
	LastAttempt time.Time `json:"last_attempt,omitzero"`
	// LastError is the error of the last attempt; "" when it succeeded.
	LastError string `json:"last_error,omitempty"`
}

// metaPath returns the sidecar file of a source.
func metaPath(cfg *rules.Config, src rules.Source) string { return cfg.CachePath(src) + ".meta" }

// ReadFetchMeta reads the sidecar of a remote source. When the source was
// never fetched, the error wraps fs.ErrNotExist.
func ReadFetchMeta(cfg *rules.Config, src rules.Source) (FetchMeta, error) {
	var m FetchMeta
	if src.URL == "" {
		return m, fmt.Errorf("server: %s is not a remote source", src)
	}
	b, err := os.ReadFile(metaPath(cfg, src))
	if err != nil {
		return m, fmt.Errorf("server: fetch meta: %w", err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return FetchMeta{}, fmt.Errorf("server: fetch meta %s: %w", metaPath(cfg, src), err)
	}
	return m, nil
}

func writeFetchMeta(cfg *rules.Config, src rules.Source, m FetchMeta) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("server: fetch meta: %w", err)
	}
	return rules.WriteFileAtomic(metaPath(cfg, src), append(b, '\n'), 0o644)
}

// NewFetchClient returns the client that downloads remote lists: it goes
// through the config's default route (so a gateway behind a parent proxy
// can fetch), never reads proxy settings from the environment, and gives up
// after FetchTimeout.
func NewFetchClient(cfg *rules.Config) (*http.Client, error) {
	router, err := newRouter(cfg)
	if err != nil {
		return nil, err
	}
	return &http.Client{Transport: router.Transport(""), Timeout: FetchTimeout}, nil
}

// Fetch downloads src, a URL source of cfg, into its cache file.
// progress, when not nil, is called as the body streams in with the bytes
// read so far and the announced length (-1 when unknown). It returns an
// error, and keeps the last good copy, on a failed request, a status other
// than 200 or 304, a body over the size cap, or content that is not a
// usable list (no entry, or too many invalid lines); the error is then also
// recorded in the sidecar.
func (f *Fetcher) Fetch(ctx context.Context, cfg *rules.Config, src rules.Source, progress func(read, total int64)) (FetchResult, error) {
	if src.URL == "" {
		return FetchResult{}, fmt.Errorf("server: fetch: %s is not a remote source", src)
	}
	file := cfg.CachePath(src)
	meta, _ := ReadFetchMeta(cfg, src) // a missing or broken sidecar means an unconditional GET
	meta.URL = src.String()
	start := time.Now()
	meta.LastAttempt = start

	res, err := f.fetch(ctx, src, file, &meta, progress)
	if err != nil {
		meta.LastError = err.Error()
	} else {
		meta.LastError = ""
	}
	if werr := writeFetchMeta(cfg, src, meta); werr != nil && err == nil {
		err = werr
	}
	log := f.Logger
	if log == nil {
		return res, err
	}
	log = log.With("url", src.String(), "dur", time.Since(start).Round(time.Millisecond))
	switch {
	case err != nil && !exists(file):
		log.Warn("remote list unavailable and never downloaded; its category stays empty until a fetch succeeds", "err", err)
	case err != nil:
		log.Warn("remote list fetch failed; keeping the last good copy", "err", err, "fetched_at", meta.FetchedAt)
	case res.Changed:
		log.Info("remote list updated", "bytes", res.Bytes, "entries", res.Entries, "format", res.Format)
	default:
		log.Debug("remote list not modified")
	}
	return res, err
}

// fetch does the work of Fetch and updates meta on success.
func (f *Fetcher) fetch(ctx context.Context, src rules.Source, file string, meta *FetchMeta, progress func(read, total int64)) (FetchResult, error) {
	res := FetchResult{File: file}
	dir := filepath.Dir(file)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return res, fmt.Errorf("server: fetch: cache folder: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, src.URL, nil)
	if err != nil {
		return res, fmt.Errorf("server: fetch %s: %w", src, err)
	}
	req.Header.Set("User-Agent", "sluice/list-fetch")
	if exists(file) { // validators only make sense with a copy to keep
		if meta.ETag != "" {
			req.Header.Set("If-None-Match", meta.ETag)
		}
		if meta.LastModified != "" {
			req.Header.Set("If-Modified-Since", meta.LastModified)
		}
	}
	client := f.Client
	if client == nil {
		return res, errors.New("server: fetch: no http client")
	}
	resp, err := client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			// net/http masks a password as "***"; Sluice everywhere as url.URL.Redacted does.
			ue.URL = src.String()
		}
		return res, fmt.Errorf("server: fetch: %w", err) // *url.Error names the URL
	}
	defer resp.Body.Close()
	res.Status = resp.StatusCode
	switch {
	case resp.StatusCode == http.StatusNotModified && exists(file):
		meta.FetchedAt = time.Now()
		return res, nil
	case resp.StatusCode != http.StatusOK:
		return res, fmt.Errorf("server: fetch %s: HTTP %s", src, resp.Status)
	}

	limit := f.MaxBytes
	if limit <= 0 {
		limit = DefaultMaxListBytes
	}
	if resp.ContentLength > limit {
		return res, fmt.Errorf("server: fetch %s: %w (%d bytes announced, cap %d)", src, ErrListTooLarge, resp.ContentLength, limit)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(file)+".*.tmp")
	if err != nil {
		return res, fmt.Errorf("server: fetch: %w", err)
	}
	keep := false
	defer func() {
		if !keep {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	body := &countingReader{r: io.LimitReader(resp.Body, limit+1), total: resp.ContentLength, progress: progress}
	n, err := io.Copy(tmp, body)
	res.Bytes = n
	if err != nil {
		return res, fmt.Errorf("server: fetch %s: reading body: %w", src, err)
	}
	if n > limit {
		return res, fmt.Errorf("server: fetch %s: %w (cap %d bytes)", src, ErrListTooLarge, limit)
	}
	if err := tmp.Sync(); err != nil {
		return res, fmt.Errorf("server: fetch: %w", err)
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return res, fmt.Errorf("server: fetch: %w", err)
	}
	ls, err := rules.ParseListFormat(tmp, src.String(), src.Format, func(rules.Entry) {})
	if err != nil {
		return res, fmt.Errorf("server: fetch %s: not a usable list: %w", src, err)
	}
	if err := usable(ls); err != nil {
		return res, fmt.Errorf("server: fetch %s: %w", src, err)
	}
	if err := tmp.Close(); err != nil {
		return res, fmt.Errorf("server: fetch: %w", err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return res, fmt.Errorf("server: fetch: %w", err)
	}
	if err := os.Rename(tmp.Name(), file); err != nil {
		return res, fmt.Errorf("server: fetch: %w", err)
	}
	keep = true
	syncDir(dir)
	res.Changed, res.Entries, res.Format = true, ls.Entries, ls.Format
	meta.ETag = resp.Header.Get("ETag")
	meta.LastModified = resp.Header.Get("Last-Modified")
	meta.FetchedAt = time.Now()
	meta.Bytes, meta.Entries = n, ls.Entries
	return res, nil
}

// usable tells whether a parsed download may replace the last good copy:
// it needs at least one entry, and no more invalid lines than entries (an
// HTML error page served with status 200 has few of either).
func usable(ls rules.ListStats) error {
	if ls.Entries == 0 {
		return fmt.Errorf("not a usable list: no entry in %d lines (%d invalid)", ls.Lines, ls.Invalid)
	}
	if ls.Invalid > ls.Entries {
		first := ""
		if len(ls.Errors) > 0 {
			first = "; first: " + ls.Errors[0].Error()
		}
		return fmt.Errorf("not a usable list: %d invalid lines, %d entries%s", ls.Invalid, ls.Entries, first)
	}
	return nil
}

// countingReader counts the bytes read and reports them to progress.
type countingReader struct {
	r        io.Reader
	n, total int64
	progress func(read, total int64)
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.progress != nil && n > 0 {
		c.progress(c.n, c.total)
	}
	return n, err
}

func exists(file string) bool {
	_, err := os.Stat(file)
	return err == nil
}

// syncDir makes a rename in dir durable; failure only costs durability.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}

// RefreshLoop keeps the remote sources of the running config fresh until
// ctx is cancelled. It fetches every URL source that is due at once (one
// never downloaded, or whose sidecar says its refresh period has passed),
// then each again after its refresh period (default 24h, less up to 10%
// jitter so that many gateways do not ask at the same second). A failed
// fetch is tried again after 30 minutes or the refresh period, whichever
// is shorter. When any list changed, the rules are reloaded. Downloads go
// through the running config's default route.
func (s *Server) RefreshLoop(ctx context.Context) {
	due := map[string]time.Time{} // by URL
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		st := s.state.Load()
		wait := s.refreshDue(ctx, st, due)
		if ctx.Err() != nil {
			return
		}
		timer.Reset(wait)
	}
}

// refreshDue fetches the due sources of st, reloads when one changed, and
// returns how long to sleep.
func (s *Server) refreshDue(ctx context.Context, st *state, due map[string]time.Time) time.Duration {
	cfg := st.cfg
	f := &Fetcher{
		Client: &http.Client{Transport: st.router.Transport(""), Timeout: FetchTimeout},
		Logger: s.log,
	}
	seen := map[string]bool{}
	changed := false
	wait := refreshPoll
	for _, name := range sortedKeys(cfg.Categories) {
		for _, src := range cfg.Categories[name] {
			if src.URL == "" || seen[src.URL] {
				continue
			}
			seen[src.URL] = true
			refresh := src.Refresh
			if refresh <= 0 {
				refresh = rules.DefaultRefresh
			}
			when, ok := due[src.URL]
			if !ok {
				when = firstDue(cfg, src, refresh)
			}
			if now := time.Now(); !now.Before(when) {
				if ctx.Err() != nil {
					return 0
				}
				res, err := f.Fetch(ctx, cfg, src, nil)
				if err != nil {
					when = time.Now().Add(min(refresh, retryAfterFailure))
				} else {
					when = time.Now().Add(jitter(refresh))
					changed = changed || res.Changed
				}
			}
			due[src.URL] = when
			wait = min(wait, max(time.Until(when), time.Second))
		}
	}
	for u := range due {
		if !seen[u] {
			delete(due, u) // a source the config no longer has
		}
	}
	if changed && ctx.Err() == nil {
		_ = s.Reload() // logs its own failure
	}
	return wait
}

// firstDue tells when a source seen for the first time is due: now when
// it has no cached copy or its last attempt failed, else one refresh
// period after the last good fetch.
func firstDue(cfg *rules.Config, src rules.Source, refresh time.Duration) time.Time {
	m, err := ReadFetchMeta(cfg, src)
	if err != nil || m.FetchedAt.IsZero() || !exists(cfg.CachePath(src)) {
		return time.Time{}
	}
	if m.LastError != "" {
		return m.LastAttempt.Add(min(refresh, retryAfterFailure))
	}
	return m.FetchedAt.Add(refresh)
}

// jitter returns d less up to 10%.
func jitter(d time.Duration) time.Duration {
	if d < 10 {
		return d
	}
	return d - rand.N(d/10)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
