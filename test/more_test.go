package test

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestUsersAddPickedUp: `sluice users add` on a running proxy's users file
// takes effect without a restart.
func TestUsersAddPickedUp(t *testing.T) {
	o := newOrigin(t, false)
	users := htpasswdFile(t, "alice", "alice-pw")
	p := startSluice(t, "users: "+users+"\nhosts: {allowed.test: 127.0.0.1}\n", nil)
	url := "http://allowed.test:" + o.port + "/u"
	if out, _ := curl(t, "-i", "-x", "http://"+p.addr, "--proxy-user", "bob:bob-pw", url); !strings.HasPrefix(out, "HTTP/1.1 407") {
		t.Fatalf("bob before being added: %s", out)
	}
	cmd := exec.Command(sluiceBin, "users", "add", "bob", "--password-stdin", "--config", filepath.Join(p.dir, "sluice.yaml"))
	cmd.Stdin = strings.NewReader("bob-pw\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("users add: %v %s", err, out)
	}
	eventually(t, "bob can log in", func() bool {
		out, code := curl(t, "-x", "http://"+p.addr, "--proxy-user", "bob:bob-pw", url)
		return code == 0 && strings.Contains(out, "path=/u")
	})
	if strings.Contains(p.Log(), "bob-pw") {
		t.Fatal("a password reached the log")
	}
}

// TestSOCKS5UDPAssociate: with socks.udp on, datagrams reach a real UDP
// echo origin through the relay, and a blocked destination is dropped.
func TestSOCKS5UDPAssociate(t *testing.T) {
	echo, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, a, err := echo.ReadFrom(buf)
			if err != nil {
				return
			}
			echo.WriteTo(buf[:n], a)
		}
	}()
	echoPort := uint16(echo.LocalAddr().(*net.UDPAddr).Port)
	p := startSluice(t, "socks: {udp: true}\nhosts: {echo.test: 127.0.0.1, blocked.test: 127.0.0.1}\nrules:\n  - block: [blocked.test]\n", nil)

	ctl, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer ctl.Close()
	ctl.SetDeadline(time.Now().Add(10 * time.Second))
	ctl.Write([]byte{5, 1, 0})
	var sel [2]byte
	if _, err := io.ReadFull(ctl, sel[:]); err != nil || sel != [2]byte{5, 0} {
		t.Fatalf("method selection: %v %v", sel, err)
	}
	ctl.Write([]byte{5, 3, 0, 1, 0, 0, 0, 0, 0, 0}) // UDP ASSOCIATE, client address unknown
	var rep [10]byte
	if _, err := io.ReadFull(ctl, rep[:]); err != nil || rep[1] != 0 || rep[3] != 1 {
		t.Fatalf("UDP ASSOCIATE reply %v: %v", rep, err)
	}
	relay := &net.UDPAddr{IP: net.IP(rep[4:8]), Port: int(binary.BigEndian.Uint16(rep[8:10]))}
	uc, err := net.DialUDP("udp", nil, relay)
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	datagram := func(host string, payload string) []byte {
		b := []byte{0, 0, 0, 3, byte(len(host))}
		b = append(b, host...)
		b = binary.BigEndian.AppendUint16(b, echoPort)
		return append(b, payload...)
	}
	uc.Write(datagram("blocked.test", "must-not-arrive"))
	uc.Write(datagram("echo.test", "ping-through-sluice"))
	uc.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 2048)
	n, err := uc.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasSuffix(buf[:n], []byte("ping-through-sluice")) || buf[3] != 1 {
		t.Fatalf("reply datagram %q", buf[:n])
	}
	// Only the allowed datagram came back.
	uc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, err := uc.Read(buf); err == nil {
		t.Fatalf("a second datagram came back: %q", buf[:n])
	}
}

// TestGroupRules: a rule with groups applies to the authenticated members
// of those groups only, on HTTP and SOCKS5 alike.
func TestGroupRules(t *testing.T) {
	o := newOrigin(t, false)
	users := htpasswdFile(t, "kid", "kid-pw", "adult", "adult-pw")
	p := startSluice(t, "users: "+users+"\ngroups: {kids: [kid]}\nhosts: {games.test: 127.0.0.1}\n"+
		"rules:\n  - block: [games.test]\n    groups: [kids]\n", nil)
	url := "http://games.test:" + o.port + "/"
	if out, _ := curl(t, "-o", "/dev/null", "-w", "%{http_code}", "-x", "http://"+p.addr, "--proxy-user", "kid:kid-pw", url); out != "403" {
		t.Errorf("kid over HTTP: %s, want 403", out)
	}
	if out, _ := curl(t, "-o", "/dev/null", "-w", "%{http_code}", "-x", "http://"+p.addr, "--proxy-user", "adult:adult-pw", url); out != "200" {
		t.Errorf("adult over HTTP: %s, want 200", out)
	}
	if _, code := curl(t, "--socks5-hostname", p.addr, "--proxy-user", "kid:kid-pw", url); code == 0 {
		t.Error("kid over SOCKS5 was allowed")
	}
	if out, code := curl(t, "--socks5-hostname", p.addr, "--proxy-user", "adult:adult-pw", url); code != 0 || !strings.Contains(out, "hello") {
		t.Errorf("adult over SOCKS5: exit %d: %s", code, out)
	}
}
