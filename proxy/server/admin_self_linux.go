//go:build linux

package server

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
)

// fromSelf reports whether the TCP connection from peer to local was
// opened by this very process: the proxy dialing its own admin listener
// on a client's behalf. It finds the peer's socket in /proc/net/tcp{,6}
// and looks for its inode among this process's fds.
func fromSelf(peer, local netip.AddrPort) (bool, error) {
	inode, err := socketInode(peer, local)
	if err != nil || inode == "" {
		return false, err // not a socket of this host: not ours
	}
	dir := "/proc/self/fd"
	ents, err := os.ReadDir(dir)
	if err != nil {
		return false, err
	}
	want := "socket:[" + inode + "]"
	for _, e := range ents {
		if target, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil && target == want {
			return true, nil
		}
	}
	return false, nil
}

// socketInode returns the inode of the socket whose local end is from and
// remote end is to, or "" when this host has none.
func socketInode(from, to netip.AddrPort) (string, error) {
	for _, f := range []struct {
		path string
		v6   bool
	}{{"/proc/net/tcp", false}, {"/proc/net/tcp6", true}} {
		l, r := procAddr(from, f.v6), procAddr(to, f.v6)
		if l == "" || r == "" {
			continue
		}
		inode, err := findInode(f.path, l, r)
		if err != nil || inode != "" {
			return inode, err
		}
	}
	return "", nil
}

// findInode scans path for the line of the socket from local to remote
// and returns its inode. It reads line by line into one buffer and splits
// only the line that matches: the file has a line per TCP socket of the
// host, tens of thousands on a busy gateway, and an admin request (each
// Prometheus scrape) scans it.
func findInode(path, local, remote string) (string, error) {
	fh, err := os.Open(path)
	if err != nil {
		if os.IsNotExist(err) {
			return "", nil // no IPv6 in this kernel
		}
		return "", err
	}
	defer fh.Close()
	// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
	want := []byte(" " + local + " " + remote + " ")
	br := bufio.NewReaderSize(fh, 64<<10)
	for {
		line, err := br.ReadSlice('\n')
		if i := bytes.Index(line, want); i >= 0 {
			if f := bytes.Fields(line); len(f) > 9 && string(f[1]) == local && string(f[2]) == remote {
				return string(f[9]), nil
			}
		}
		switch {
		case err == io.EOF:
			return "", nil
		case err == bufio.ErrBufferFull: // a line longer than the buffer: not one of ours
			for err == bufio.ErrBufferFull {
				_, err = br.ReadSlice('\n')
			}
			if err == io.EOF {
				return "", nil
			}
		}
		if err != nil {
			return "", err
		}
	}
}

// procAddr writes ap as /proc/net/tcp{,6} do: the address as 32-bit words
// in host (little-endian) byte order, then the port, in upper-case hex.
// An IPv4 address in tcp6 is the IPv4-mapped one. It returns "" for an
// address that file cannot hold.
func procAddr(ap netip.AddrPort, v6 bool) string {
	a := ap.Addr().Unmap()
	var b []byte
	switch {
	case !v6 && a.Is4():
		b4 := a.As4()
		b = b4[:]
	case v6:
		b16 := a.As16() // IPv4-mapped for an IPv4 address
		b = b16[:]
	default:
		return ""
	}
	w := make([]byte, len(b))
	for i := 0; i < len(b); i += 4 {
		w[i], w[i+1], w[i+2], w[i+3] = b[i+3], b[i+2], b[i+1], b[i]
	}
	return strings.ToUpper(hex.EncodeToString(w)) + fmt.Sprintf(":%04X", ap.Port())
}
