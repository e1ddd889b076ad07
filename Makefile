# Sluice: build, run, test, benchmark, install.
GO      ?= go
BIN     := bin/sluice
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)

# `make install` puts files under $(DESTDIR)$(PREFIX); packagers set DESTDIR.
PREFIX      ?= /usr/local
BINDIR      ?= $(PREFIX)/bin
MANDIR      ?= $(PREFIX)/share/man
UNITDIR     ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR  ?= $(PREFIX)/share/zsh/site-functions
FISHCOMPDIR ?= $(PREFIX)/share/fish/vendor_completions.d
# The man pages' date: the last commit's, so that two builds are the same.
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null)
export SOURCE_DATE_EPOCH

# Programs the tests drive for real; `make test` installs the missing ones.
TEST_TOOLS := curl:curl nc:netcat-openbsd squid:squid danted:dante-server \
              microsocks:microsocks htpasswd:apache2-utils \
              chromium:chromium systemd-analyze:systemd man:man-db goaccess:goaccess \
              slapd:slapd ldapadd:ldap-utils nft:nftables ip:iproute2 setpriv:util-linux \
              cc:gcc haproxy:haproxy

.PHONY: all build run test deps-test deps-peers vet loadgen floor bench bench-peers fuzz clean install uninstall

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/sluice

run: build
	./$(BIN) serve

# Install the programs in $(1) (command:package ...) that are missing.
define install_missing
	@missing=""; for t in $(1); do \
	  cmd=$${t%%:*}; pkg=$${t##*:}; \
	  command -v $$cmd >/dev/null 2>&1 || [ -x /usr/sbin/$$cmd ] || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi
endef

# Install the real programs the integration tests use, when missing.
deps-test:
	$(call install_missing,$(TEST_TOOLS))

# The proxies `make bench-peers` compares Sluice with, and the C compiler
# of the floor (test/loadgen/peers/floor.c).
PEER_TOOLS := squid:squid microsocks:microsocks haproxy:haproxy cc:gcc
deps-peers:
	$(call install_missing,$(PEER_TOOLS))

vet:
	$(GO) vet ./...

test: deps-test vet
	$(GO) test -race -count=1 -timeout 20m ./...

# Every fuzz target for FUZZTIME each (go test runs their seeds already).
FUZZTIME ?= 30s
fuzz:
	@for f in $$(grep -rl --include='*_test.go' '^func Fuzz' .); do \
	  dir=$$(dirname $$f); \
	  for t in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' $$f); do \
	    echo "fuzz $$dir $$t"; \
	    $(GO) test -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) $$dir || exit 1; \
	  done; \
	done

# The load harness (test/loadgen): loopback origins, bounded loads, every
# figure a ratio to the same load without a proxy. LOADGEN_FLAGS passes it
# flags, e.g. LOADGEN_FLAGS='-loads idle -idle 2000' (see bin/loadgen -h).
LOADGEN_FLAGS ?=
loadgen:
	$(GO) build -o bin/loadgen ./test/loadgen

# The floor: the leanest forward proxy (C, epoll on every CPU, no filter,
# no log), what this machine allows any proxy; see test/loadgen/peers/floor.c.
floor:
	mkdir -p bin && cc -O2 -pthread -o bin/floor test/loadgen/peers/floor.c test/loadgen/peers/floor_head.c

# Performance figures: Go benchmarks of the engine, the start-up and reload
# test on 2,000,000 domains, then the load harness against Sluice.
bench: build loadgen
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 2s ./filter/ ./rules/ ./proxy/relay/
	$(GO) test -run '^TestLoad' -count=1 -v -timeout 30m -tags bench ./test/
	./bin/loadgen -proxies sluice -sluice $(BIN) -markdown bin/bench.md $(LOADGEN_FLAGS)

# The same loads against Squid, microsocks and Sluice side by side, then
# the references: HAProxy as a TCP port forwarder, the floor proxy and the
# floor as a TCP port forwarder (no handshake at all). The README's table,
# also written to bin/bench-peers.md. The harness starts each proxy on a
# loopback port with the configs in test/loadgen/peers and stops it
# afterwards.
bench-peers: build loadgen floor deps-peers
	./bin/loadgen -proxies squid,microsocks,sluice,haproxy,floor,forward -sluice $(BIN) -floor bin/floor -markdown bin/bench-peers.md $(LOADGEN_FLAGS)

# The binary, a man page per command, the systemd unit (pointing at
# $(BINDIR)), the sysusers.d entry of its `sluice` user, and the bash, zsh
# and fish completions.
install: build
	rm -rf $(BIN).d && mkdir -p $(BIN).d
	$(abspath $(BIN)) man $(BIN).d/man >/dev/null
	sed 's|/usr/local/bin/sluice|$(BINDIR)/sluice|g' contrib/sluice.service >$(BIN).d/sluice.service
	$(abspath $(BIN)) completion bash >$(BIN).d/sluice.bash
	$(abspath $(BIN)) completion zsh >$(BIN).d/_sluice
	$(abspath $(BIN)) completion fish >$(BIN).d/sluice.fish
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR) \
	  $(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSHCOMPDIR) $(DESTDIR)$(FISHCOMPDIR)
	install -m 0755 $(BIN) $(DESTDIR)$(BINDIR)/sluice
	install -m 0644 $(BIN).d/man/*.1 $(DESTDIR)$(MANDIR)/man1/
	install -m 0644 $(BIN).d/sluice.service $(DESTDIR)$(UNITDIR)/sluice.service
	install -m 0644 contrib/sluice.sysusers $(DESTDIR)$(SYSUSERSDIR)/sluice.conf
	install -m 0644 $(BIN).d/sluice.bash $(DESTDIR)$(BASHCOMPDIR)/sluice
	install -m 0644 $(BIN).d/_sluice $(DESTDIR)$(ZSHCOMPDIR)/_sluice
	install -m 0644 $(BIN).d/sluice.fish $(DESTDIR)$(FISHCOMPDIR)/sluice.fish

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/sluice $(DESTDIR)$(MANDIR)/man1/sluice.1 $(DESTDIR)$(MANDIR)/man1/sluice-*.1 \
	  $(DESTDIR)$(UNITDIR)/sluice.service $(DESTDIR)$(SYSUSERSDIR)/sluice.conf $(DESTDIR)$(BASHCOMPDIR)/sluice \
	  $(DESTDIR)$(ZSHCOMPDIR)/_sluice $(DESTDIR)$(FISHCOMPDIR)/sluice.fish

clean:
	rm -rf bin
