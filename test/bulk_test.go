package test

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// pipeHogEnv makes the test binary a pipe hog (see pipeHog) instead.
const pipeHogEnv = "SLUICE_TEST_PIPE_HOG"

func init() {
	if os.Getenv(pipeHogEnv) == "1" {
		pipeHog()
		os.Exit(0)
	}
}

// pipeHog holds 1 MiB pipes until the kernel refuses to enlarge one (its
// user has reached pipe-user-pages-soft), then makes one more pipe and
// prints its size, which any new pipe of the user gets now, and waits for
// stdin to close.
func pipeHog() {
	held := 0
	for range 200 {
		var fds [2]int
		if err := unix.Pipe2(fds[:], unix.O_CLOEXEC); err != nil {
			break
		}
		held++
		if _, err := unix.FcntlInt(uintptr(fds[0]), unix.F_SETPIPE_SZ, 1<<20); err != nil {
			break
		}
	}
	var fds [2]int
	next := -1
	if unix.Pipe2(fds[:], unix.O_CLOEXEC) == nil {
		next, _ = unix.FcntlInt(uintptr(fds[0]), unix.F_GETPIPE_SZ, 0)
	}
	fmt.Printf("held %d next %d\n", held, next)
	io.Copy(io.Discard, os.Stdin)
}

// TestBulkTunnelsOverPipeLimit runs Sluice as an unprivileged user whose
// pipes already fill pipe-user-pages-soft (another process of the same
// user holds them), so that the kernel gives Sluice's new pipes 2 pages
// and refuses to enlarge them. Sluice must not splice through such pipes
// (it copies through buffers: at most one pipe, made and closed, may be
// seen at a time), and tunnels carrying megabytes both ways at once must
// still deliver every byte, exactly, and end cleanly.
func TestBulkTunnelsOverPipeLimit(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test runs Sluice as another user (setpriv): it needs root")
	}
	setpriv := requireTool(t, "setpriv")
	// A uid of its own: the kernel counts pipe pages per user.
	uid := strconv.Itoa(61000 + os.Getpid()%1000)
	dir, err := os.MkdirTemp("", "sluice-pipes-") // t.TempDir's parent is closed to others
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// Copies the other user can run.
	bin, hogBin := filepath.Join(dir, "sluice"), filepath.Join(dir, "hog")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for src, dst := range map[string]string{sluiceBin: bin, self: hogBin} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, 0o755); err != nil {
			t.Fatal(err)
		}
	}

	hog := exec.Command(setpriv, "--reuid="+uid, "--regid="+uid, "--clear-groups", hogBin)
	hog.Env = append(os.Environ(), pipeHogEnv+"=1")
	stdin, err := hog.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := hog.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	hog.Stderr = os.Stderr
	if err := hog.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); hog.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("pipe hog: %v", err)
	}
	t.Logf("pipe hog (uid %s): %s", uid, strings.TrimSpace(line))
	if f := strings.Fields(line); len(f) != 4 || f[3] == "65536" {
		t.Fatalf("the kernel still gives uid %s full pipes (%q): is fs/pipe-user-pages-soft 0?", uid, line)
	}

	writeFiles(t, dir, map[string]string{"sluice.yaml": "listen: [\"127.0.0.1:0\"]\n"})
	p := runProgram(t, dir, setpriv, "--reuid="+uid, "--regid="+uid, "--clear-groups", "--",
		bin, "serve", "--config", filepath.Join(dir, "sluice.yaml"))

	const tunnels, size = 8, 24 << 20
	origin := bulkOrigin(t, size)
	var wg sync.WaitGroup
	errs := make(chan error, tunnels)
	conns := make([]net.Conn, tunnels)
	for i := range conns {
		conns[i] = connectTunnel(t, p.addr, origin)
		conns[i].SetDeadline(time.Now().Add(2 * time.Minute))
	}
	for i, c := range conns {
		wg.Go(func() { errs <- bulkExchange(c, uint64(i), size) })
	}
	stop := make(chan struct{})
	close(stop)
	before := watchPipes(p.cmd.Process.Pid, stop) // its stdout and stderr
	stop = make(chan struct{})
	maxPipes := make(chan int)
	go func() { maxPipes <- watchPipes(p.cmd.Process.Pid, stop) }()
	wg.Wait()
	close(stop)
	if n := <-maxPipes - before; n > 2 {
		t.Errorf("Sluice held %d pipe fds at once: it spliced through the kernel's small pipes", n)
	}
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if strings.Contains(p.Log(), `"level":"ERROR"`) {
		t.Fatalf("errors logged:\n%s", p.Log())
	}
}

// bulkStream writes n bytes of stream seed to w: 64 KiB chunks, each
// numbered, so that a lost, repeated or reordered chunk changes the crc.
func bulkStream(w io.Writer, seed uint64, n int) (uint32, error) {
	buf := make([]byte, 64<<10)
	for i := range buf {
		buf[i] = byte(seed*131 + uint64(i)*7)
	}
	var crc uint32
	for i := uint64(0); n > 0; i++ {
		k := min(n, len(buf))
		binary.BigEndian.PutUint64(buf, seed<<32|i)
		crc = crc32.Update(crc, crc32.IEEETable, buf[:k])
		if _, err := w.Write(buf[:k]); err != nil {
			return crc, err
		}
		n -= k
	}
	return crc, nil
}

// bulkOrigin listens on loopback: a connection's first 8 bytes are a
// seed; the origin then sends the stream of seed+1000 and, at the same
// time, reads size bytes and answers with their crc after its stream.
func bulkOrigin(t *testing.T, size int) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(2 * time.Minute))
				var hdr [8]byte
				if _, err := io.ReadFull(c, hdr[:]); err != nil {
					return
				}
				seed := binary.BigEndian.Uint64(hdr[:])
				got := make(chan uint32, 1)
				go func() {
					h := crc32.NewIEEE()
					io.CopyN(h, c, int64(size))
					got <- h.Sum32()
				}()
				if _, err := bulkStream(c, seed+1000, size); err != nil {
					return
				}
				binary.BigEndian.PutUint32(hdr[:], <-got)
				c.Write(hdr[:4])
			}()
		}
	}()
	return ln.Addr().String()
}

// bulkExchange sends size bytes up through c while reading size bytes
// down, and checks both ways by crc.
func bulkExchange(c net.Conn, seed uint64, size int) error {
	var hdr [8]byte
	binary.BigEndian.PutUint64(hdr[:], seed)
	if _, err := c.Write(hdr[:]); err != nil {
		return err
	}
	sent := make(chan uint32, 1)
	go func() {
		crc, _ := bulkStream(c, seed, size)
		sent <- crc
	}()
	want, _ := bulkStream(io.Discard, seed+1000, size)
	h := crc32.NewIEEE()
	if n, err := io.CopyN(h, c, int64(size)); err != nil {
		return fmt.Errorf("tunnel %d: down: %d of %d bytes: %v", seed, n, size, err)
	}
	if h.Sum32() != want {
		return fmt.Errorf("tunnel %d: down: the bytes differ", seed)
	}
	up := <-sent
	if _, err := io.ReadFull(c, hdr[:4]); err != nil {
		return fmt.Errorf("tunnel %d: the origin's crc: %v", seed, err)
	}
	if got := binary.BigEndian.Uint32(hdr[:4]); got != up {
		return fmt.Errorf("tunnel %d: up: the origin got other bytes (crc %08x, sent %08x)", seed, got, up)
	}
	return nil
}

// watchPipes counts the pipe fds of process pid at once and then every
// few milliseconds until stop is closed, and returns the most it saw.
func watchPipes(pid int, stop <-chan struct{}) int {
	most := 0
	fdDir := fmt.Sprintf("/proc/%d/fd", pid)
	for first := true; ; first = false {
		if !first {
			select {
			case <-stop:
				return most
			case <-time.After(2 * time.Millisecond):
			}
		}
		ents, err := os.ReadDir(fdDir)
		if err != nil {
			continue
		}
		n := 0
		for _, e := range ents {
			if l, err := os.Readlink(filepath.Join(fdDir, e.Name())); err == nil && strings.HasPrefix(l, "pipe:") {
				n++
			}
		}
		most = max(most, n)
	}
}
