package sniff

import (
	"errors"
	"fmt"

	"golang.org/x/crypto/cryptobyte"
)

// TLS constants (RFC 8446 sections 4 and 5.1, RFC 6066 section 3, and
// draft-ietf-tls-esni for encrypted_client_hello).
const (
	recordTypeHandshake   = 22      // ContentType handshake
	recordHeaderLen       = 5       // type, legacy_record_version, length
	maxPlaintext          = 1 << 14 // TLSPlaintext.length
	handshakeClientHello  = 1       // HandshakeType client_hello
	extServerName         = 0       // ExtensionType server_name
	extEncryptedHello     = 0xfe0d  // ExtensionType encrypted_client_hello
	nameTypeHostName      = 0       // NameType host_name
	maxHostName           = 255     // longest host_name taken
	handshakeHeaderLength = 4       // msg_type, uint24 length
)

// errNeedMore means the bytes so far are a valid prefix of a ClientHello.
var errNeedMore = errors.New("sniff: need more bytes")

// parseRecords reassembles the ClientHello from the TLS records at the
// start of buf and returns its server name and whether it offers ECH. It
// returns errNeedMore while the ClientHello is incomplete and buf could
// still grow into one.
func parseRecords(buf []byte) (name string, ech bool, err error) {
	var msg []byte // the handshake bytes reassembled so far
	for {
		if len(buf) < recordHeaderLen {
			return "", false, errNeedMore
		}
		typ, major, n := buf[0], buf[1], int(buf[3])<<8|int(buf[4])
		if typ != recordTypeHandshake {
			return "", false, fmt.Errorf("%w: record type %d inside the ClientHello", ErrMalformed, typ)
		}
		if major != 3 {
			return "", false, fmt.Errorf("%w: record version %d.%d", ErrMalformed, buf[1], buf[2])
		}
		if n > maxPlaintext {
			return "", false, fmt.Errorf("%w: record length %d", ErrMalformed, n)
		}
		// An empty record is against RFC 8446 5.1, but OpenSSL skips a few
		// of them; skip them too, so that they cannot hide the name.
		if len(buf) < recordHeaderLen+n {
			// Take what there is: the handshake header may already tell
			// that the message is too large or not a ClientHello.
			msg = append(msg, buf[recordHeaderLen:]...)
			if err := checkHeader(msg); err != nil {
				return "", false, err
			}
			return "", false, errNeedMore
		}
		msg = append(msg, buf[recordHeaderLen:recordHeaderLen+n]...)
		buf = buf[recordHeaderLen+n:]
		if err := checkHeader(msg); err != nil {
			return "", false, err
		}
		if len(msg) < handshakeHeaderLength {
			continue
		}
		size := handshakeHeaderLength + (int(msg[1])<<16 | int(msg[2])<<8 | int(msg[3]))
		if len(msg) < size {
			continue
		}
		// Bytes after the ClientHello in its record are against RFC 8446
		// 5.1 and servers refuse them, but the name is still what the
		// client asked for: take it.
		return parseClientHello(msg[handshakeHeaderLength:size])
	}
}

// checkHeader checks the handshake header at the start of msg, as far as
// it is there.
func checkHeader(msg []byte) error {
	if len(msg) >= 1 && msg[0] != handshakeClientHello {
		return fmt.Errorf("%w: handshake type %d, not a ClientHello", ErrMalformed, msg[0])
	}
	if len(msg) >= handshakeHeaderLength {
		size := handshakeHeaderLength + (int(msg[1])<<16 | int(msg[2])<<8 | int(msg[3]))
		if size > MaxHello {
			return fmt.Errorf("%w: ClientHello of %d bytes", ErrTooLarge, size)
		}
	}
	return nil
}

// parseClientHello parses the body of a ClientHello (RFC 8446 4.1.2, and
// the TLS 1.2 form without extensions). Every length is checked against
// its enclosing one, duplicate extensions are refused as crypto/tls
// refuses them, and so are several host names in server_name (RFC 6066
// forbids them, and servers would disagree on which one counts).
func parseClientHello(body []byte) (name string, ech bool, err error) {
	s := cryptobyte.String(body)
	var (
		version      uint16
		random       []byte
		sessionID    cryptobyte.String
		suites       cryptobyte.String
		compressions cryptobyte.String
	)
	if !s.ReadUint16(&version) || !s.ReadBytes(&random, 32) ||
		!s.ReadUint8LengthPrefixed(&sessionID) || len(sessionID) > 32 ||
		!s.ReadUint16LengthPrefixed(&suites) || len(suites) < 2 || len(suites)%2 != 0 ||
		!s.ReadUint8LengthPrefixed(&compressions) || len(compressions) < 1 {
		return "", false, fmt.Errorf("%w: ClientHello fields", ErrMalformed)
	}
	if s.Empty() {
		return "", false, ErrNoName // TLS 1.2 and older may omit extensions
	}
	var exts cryptobyte.String
	if !s.ReadUint16LengthPrefixed(&exts) || !s.Empty() {
		return "", false, fmt.Errorf("%w: extensions", ErrMalformed)
	}
	seen := make(map[uint16]bool)
	found := false
	for !exts.Empty() {
		var typ uint16
		var data cryptobyte.String
		if !exts.ReadUint16(&typ) || !exts.ReadUint16LengthPrefixed(&data) {
			return "", false, fmt.Errorf("%w: extension", ErrMalformed)
		}
		if seen[typ] {
			return "", false, fmt.Errorf("%w: duplicate extension %d", ErrMalformed, typ)
		}
		seen[typ] = true
		switch typ {
		case extEncryptedHello:
			ech = true
		case extServerName:
			n, err := parseServerName(data)
			if err != nil {
				return "", ech, err
			}
			name, found = n, true
		}
	}
	if !found {
		return "", ech, ErrNoName
	}
	return name, ech, nil
}

// parseServerName parses the server_name extension's ServerNameList and
// returns its host_name. OpenSSL takes the first entry and ignores the
// others, crypto/tls refuses a second host_name: a second one is
// ErrAmbiguous, which the caller must not take as "no name".
func parseServerName(data cryptobyte.String) (string, error) {
	var list cryptobyte.String
	if !data.ReadUint16LengthPrefixed(&list) || !data.Empty() || list.Empty() {
		return "", fmt.Errorf("%w: server_name", ErrMalformed)
	}
	name := ""
	for !list.Empty() {
		var typ uint8
		var n cryptobyte.String
		if !list.ReadUint8(&typ) || !list.ReadUint16LengthPrefixed(&n) {
			return "", fmt.Errorf("%w: server_name entry", ErrMalformed)
		}
		if typ != nameTypeHostName {
			continue // RFC 6066 allows future name types; skip them
		}
		if name != "" {
			return "", fmt.Errorf("%w: several host names in server_name", ErrAmbiguous)
		}
		if len(n) == 0 || len(n) > maxHostName || !printable(n) {
			return "", fmt.Errorf("%w: server_name %q", ErrMalformed, []byte(n))
		}
		name = string(n)
	}
	if name == "" {
		return "", ErrNoName
	}
	return name, nil
}

// printable reports whether b holds printable ASCII only, without spaces.
func printable[T ~string | ~[]byte](b T) bool {
	for i := range len(b) {
		if c := b[i]; c <= ' ' || c >= 0x7f {
			return false
		}
	}
	return true
}
