# Sluice: build, run, test, benchmark.
GO      ?= go
BIN     := bin/sluice
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)

# Programs the tests drive for real; `make test` installs the missing ones.
TEST_TOOLS := curl:curl nc:netcat-openbsd squid:squid danted:dante-server \
              microsocks:microsocks htpasswd:apache2-utils \
              chromium:chromium goaccess:goaccess

.PHONY: all build run test deps-test vet unit bench fuzz clean

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/sluice

run: build
	./$(BIN) serve

# Install the real programs the integration tests use, when missing.
deps-test:
	@missing=""; for t in $(TEST_TOOLS); do \
	  cmd=$${t%%:*}; pkg=$${t##*:}; \
	  command -v $$cmd >/dev/null 2>&1 || [ -x /usr/sbin/$$cmd ] || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

vet:
	$(GO) vet ./...

test: deps-test vet
	$(GO) test -race -count=1 -timeout 20m ./...

# Performance figures: Go benchmarks of the engine, then the load harness.
bench: build
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 2s ./filter/ ./rules/ ./proxy/relay/
	$(GO) test -run '^TestLoad' -count=1 -v -tags bench ./test/

clean:
	rm -rf bin
