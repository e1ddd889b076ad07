package auth

import (
	"bytes"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// closingServer accepts connections, counts them and closes them at once:
// a "directory" that never answers an LDAP request.
func closingServer(t *testing.T) (url string, accepts *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	accepts = new(atomic.Int64)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepts.Add(1)
			c.Close()
		}
	}()
	return "ldap://" + ln.Addr().String(), accepts
}

func newTestDirectory(t *testing.T, url string, log *bytes.Buffer) *Directory {
	t.Helper()
	d, err := NewDirectory(DirectoryConfig{URL: url, BaseDN: "dc=test", BindDN: "cn=svc,dc=test",
		BindPassword: "svc-secret", Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	d.Logger = slog.New(slog.NewTextHandler(log, nil))
	return d
}

// TestDirectoryEmptyPassword: an empty password (an anonymous bind in
// LDAP) is refused without connecting to the directory, and counts as a
// failure of the pair.
func TestDirectoryEmptyPassword(t *testing.T) {
	url, accepts := closingServer(t)
	var log bytes.Buffer
	d := newTestDirectory(t, url, &log)
	lo := netip.MustParseAddr("127.0.0.1")
	for range DefaultFailureBurst {
		if _, ok := d.Authenticate(lo, "alice", ""); ok {
			t.Fatal("an empty password passed")
		}
	}
	if _, ok := d.Authenticate(lo, "", "x"); ok {
		t.Fatal("an empty user name passed")
	}
	if n := accepts.Load(); n != 0 {
		t.Errorf("the directory was dialed %d times", n)
	}
	if _, ok := d.Authenticate(lo, "alice", "pw"); ok {
		t.Fatal("a limited pair passed")
	}
	if st := d.Stats(); st.Limited != 1 || st.Binds != 0 {
		t.Errorf("stats %+v, want one limited attempt and no bind", st)
	}
	if !strings.Contains(log.String(), "empty user name or password") {
		t.Errorf("log lacks the reason:\n%s", log.String())
	}
}

// TestDirectoryUnavailable: a directory that closes every connection, or
// that is not listening, rejects the credentials, logs an error and does
// not use up the pair's allowance (it is not the user's fault); nothing is
// cached. The password never reaches the log.
func TestDirectoryUnavailable(t *testing.T) {
	url, accepts := closingServer(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "ldap://" + ln.Addr().String()
	ln.Close()
	lo := netip.MustParseAddr("127.0.0.1")
	for _, u := range []string{url, down} {
		var log bytes.Buffer
		d := newTestDirectory(t, u, &log)
		for range DefaultFailureBurst + 2 {
			if _, ok := d.Authenticate(lo, "alice", "alice-secret"); ok {
				t.Fatalf("%s: passed", u)
			}
		}
		st := d.Stats()
		if st.Outages != DefaultFailureBurst+2 || st.Limited != 0 || st.CacheHits != 0 {
			t.Errorf("%s: stats %+v, want every attempt an outage, none limited", u, st)
		}
		if !strings.Contains(log.String(), "directory unavailable") || strings.Contains(log.String(), "alice-secret") ||
			strings.Contains(log.String(), "svc-secret") {
			t.Errorf("%s: log:\n%s", u, log.String())
		}
	}
	if accepts.Load() == 0 {
		t.Error("the closing directory was never dialed")
	}
}

func TestNewDirectoryErrors(t *testing.T) {
	if _, err := NewDirectory(DirectoryConfig{URL: "ldap://h:389", UserFilter: "(uid={user}"}); err == nil {
		t.Error("an unbalanced filter was accepted")
	}
	if _, err := NewDirectory(DirectoryConfig{URL: "ldap://h:389", Groups: map[string]string{"s": "not a dn"}}); err == nil {
		t.Error("a group that is not a DN was accepted")
	}
}
