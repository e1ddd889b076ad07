package socks

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// udpEcho is a UDP origin on loopback that echoes every datagram.
func udpEcho(t *testing.T) netip.AddrPort {
	t.Helper()
	pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			pc.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	t.Cleanup(func() { pc.Close(); wg.Wait() })
	return addrPort(pc.LocalAddr())
}

// associate opens a control connection and asks for UDP ASSOCIATE; it
// returns the control connection and the relay address, or the reply code.
func associateRaw(t *testing.T, addr string) (net.Conn, netip.AddrPort, byte) {
	t.Helper()
	c := dialRaw(t, addr)
	if _, err := c.Write(cat(greet(0), req5(cmdUDPAssociate, "0.0.0.0", 0))); err != nil {
		t.Fatal(err)
	}
	var b [2 + 10]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		t.Fatal(err)
	}
	rep := b[2:]
	if rep[1] != 0 {
		return c, netip.AddrPort{}, rep[1]
	}
	if rep[3] != atypIPv4 {
		t.Fatalf("relay address type %d, want IPv4", rep[3])
	}
	return c, netip.AddrPortFrom(netip.AddrFrom4([4]byte(rep[4:8])), binary.BigEndian.Uint16(rep[8:])), 0
}

func datagram(host string, port uint16, payload string) []byte {
	b := req5(0, host, port)[3:] // ATYP ADDR PORT
	return append(append([]byte{0, 0, 0}, b...), payload...)
}

// TestUDPAssociate relays datagrams to a real UDP echo origin, drops a
// blocked destination, a stranger's datagram and a malformed one, and ends
// the association with its control connection.
func TestUDPAssociate(t *testing.T) {
	echo := udpEcho(t)
	pol := &recordingPolicy{block: map[string]bool{"blocked.test": true}, blockPt: map[uint16]bool{9: true}}
	srv := &Server{Policy: pol, UDP: true, MaxUDPPerClient: 1}
	addr := start(t, srv)

	ctrl, relay, code := associateRaw(t, addr)
	if code != 0 {
		t.Fatalf("UDP ASSOCIATE reply 0x%02x", code)
	}
	if relay.Addr() != netip.MustParseAddr("127.0.0.1") {
		t.Errorf("relay on %v, want the listener's IP", relay)
	}
	client, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	client.SetDeadline(time.Now().Add(10 * time.Second))
	relayAddr := net.UDPAddrFromAddrPort(relay)
	send := func(b []byte) {
		t.Helper()
		if _, err := client.WriteToUDP(b, relayAddr); err != nil {
			t.Fatal(err)
		}
	}
	expectEcho := func(payload string) {
		t.Helper()
		buf := make([]byte, 2048)
		n, err := client.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		want := append(appendUDPHeader(nil, echo), payload...)
		if !bytes.Equal(buf[:n], want) {
			t.Fatalf("got % x, want % x", buf[:n], want)
		}
	}

	send(datagram("127.0.0.1", echo.Port(), "first"))
	expectEcho("first")

	// Blocked by name and by port: dropped and counted. A later allowed
	// datagram's echo proves they were handled (the relay is sequential).
	send(datagram("blocked.test", 53, "nope"))
	send(datagram("127.0.0.1", 9, "nope"))
	send([]byte{0, 0, 1, 1, 127, 0, 0, 1, 0, 9, 'f'}) // a fragment
	send(datagram("127.0.0.1", echo.Port(), "second"))
	expectEcho("second")

	// Another IP may not use the relay.
	stranger, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.2:0")))
	if err == nil {
		stranger.WriteToUDP(datagram("127.0.0.1", echo.Port(), "stranger"), relayAddr)
		stranger.Close()
	}
	send(datagram("127.0.0.1", echo.Port(), "third"))
	expectEcho("third")

	st := srv.Stats()
	if st.UDPBlocked != 2 {
		t.Errorf("UDPBlocked = %d, want 2", st.UDPBlocked)
	}
	wantDropped := int64(1)
	if err == nil {
		wantDropped = 2
	}
	if st.UDPDropped != wantDropped {
		t.Errorf("UDPDropped = %d, want %d", st.UDPDropped, wantDropped)
	}
	if st.UDPRelayed != 6 {
		t.Errorf("UDPRelayed = %d, want 6", st.UDPRelayed)
	}

	// The limit is one association per client IP.
	c2, _, code := associateRaw(t, addr)
	if code != byte(repGeneralFailure) {
		t.Errorf("second association reply 0x%02x, want 0x01", code)
	}
	c2.Close()

	// Closing the control connection ends the association and frees the slot.
	ctrl.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c3, _, code := associateRaw(t, addr)
		c3.Close()
		if code == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("association slot not released after the control connection closed")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestUDPIdle ends an association that carries no datagram for IdleTimeout.
func TestUDPIdle(t *testing.T) {
	srv := &Server{Policy: allowAll, UDP: true, IdleTimeout: 50 * time.Millisecond}
	addr := start(t, srv)
	ctrl, _, code := associateRaw(t, addr)
	if code != 0 {
		t.Fatalf("reply 0x%02x", code)
	}
	if _, err := ctrl.Read(make([]byte, 1)); !isClosed(err) {
		t.Errorf("control connection read = %v, want EOF after idle", err)
	}
}
