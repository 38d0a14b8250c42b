GO       ?= go
FUZZTIME ?= 10s
SUDO     := $(if $(filter 0,$(shell id -u)),,sudo)
# As root, the tests must build network namespaces (the chaos smoke cuts a
# partition in them) rather than fall back to loopback.
NETNS    := $(if $(filter 0,$(shell id -u)),1,)

.PHONY: all build run test deps check fuzz bench-node bench-nonce bench-cluster bench-route bench-deps bench-peers bench-chaos bench-xdc bench-expiry clean

all: build

# The daemon, and the benchmarks beside it (they find the daemon there).
build:
	$(GO) build -o bin/tokenstore ./cmd/tokenstore
	$(GO) build -o bin/tokenstore-bench ./cmd/tokenstore-bench

# The embedded default: one node, data in ./data, API on 127.0.0.1:7400.
run:
	$(GO) run ./cmd/tokenstore serve

# Every Go module of the repository: the daemon's at the root, and any
# below it with a go.mod of its own (storage adapters that bring their
# OAuth server's dependencies) gets its tests and vet run too.
MODULES := $(shell find . -name go.mod -not -path './.git/*' -exec dirname {} \; | sort)

# Everything that must pass before a change lands.
test: deps check
	@for m in $(MODULES); do \
		echo "go test -race $$m/..."; \
		(cd $$m && TOKENSTORE_REQUIRE_NETNS=$(NETNS) $(GO) test -race -count=1 ./...) || exit 1; \
	done
	$(MAKE) fuzz

# What the tests run for real, from Debian's packages: a memcached server,
# Apache Traffic Server with its Lua plugin (the router's ATS export), and
# iproute2 for the chaos bench's network namespaces.
deps:
	@command -v memcached >/dev/null 2>&1 || { \
		echo "installing memcached"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends memcached; }
	@{ command -v traffic_server >/dev/null 2>&1 && test -f /usr/lib/trafficserver/modules/tslua.so; } || { \
		echo "installing trafficserver"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends trafficserver; }
	@command -v ip >/dev/null 2>&1 || { \
		echo "installing iproute2"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends iproute2; }

# The daemon builds where its users run it, and links no benchmark tooling;
# the benchmarks build on a Mac too (network emulation is Linux's only).
DAEMON_PLATFORMS := darwin/arm64 darwin/amd64 linux/arm64
TOOLING_DEPS     := go.etcd.io/etcd/client|github.com/redis/go-redis|gonum.org|porcupine|go.uber.org/zap

check:
	@unformatted=$$(gofmt -l .); if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	@for m in $(MODULES); do (cd $$m && $(GO) vet ./...) || exit 1; done
	@for p in $(DAEMON_PLATFORMS); do \
		echo "build ./cmd/tokenstore for $$p"; \
		GOOS=$${p%/*} GOARCH=$${p#*/} $(GO) build -o /dev/null ./cmd/tokenstore || exit 1; \
	done
	@echo "build ./cmd/tokenstore-bench for darwin/arm64"
	@GOOS=darwin GOARCH=arm64 $(GO) build -o /dev/null ./cmd/tokenstore-bench
	@linked=$$($(GO) list -deps ./cmd/tokenstore | grep -E '$(TOOLING_DEPS)'); \
	if [ -n "$$linked" ]; then echo "the daemon links benchmark tooling:"; echo "$$linked"; exit 1; fi

# Each fuzz target runs briefly; longer runs: make fuzz FUZZTIME=10m.
fuzz:
	GO=$(GO) scripts/fuzz FuzzParse ./token $(FUZZTIME)
	GO=$(GO) scripts/fuzz FuzzDecodeIssue ./api $(FUZZTIME)
	GO=$(GO) scripts/fuzz FuzzDecodeLookup ./api $(FUZZTIME)
	GO=$(GO) scripts/fuzz FuzzApply ./fsm $(FUZZTIME)
	GO=$(GO) scripts/fuzz FuzzRestore ./fsm $(FUZZTIME)
	GO=$(GO) scripts/fuzz FuzzStoredRecord ./fsm $(FUZZTIME)
	GO=$(GO) scripts/fuzz FuzzForwardedWrite ./cluster $(FUZZTIME)
	GO=$(GO) scripts/fuzz FuzzReadCall ./cluster $(FUZZTIME)

# Measurements on loopback (tokenstore-bench loopback): one node; nonce
# checks against memcached direct; a three-node cluster; the router against
# its upstream. DURATION=30s CLIENTS=128 tune.
bench-node: build
	bin/tokenstore-bench loopback node --duration $(DURATION) --clients $(CLIENTS)
bench-nonce: deps build
	bin/tokenstore-bench loopback nonce --duration $(DURATION) --clients $(CLIENTS)
bench-cluster: build
	bin/tokenstore-bench loopback cluster --duration $(DURATION) --clients $(CLIENTS)
bench-route: build
	bin/tokenstore-bench loopback route --duration $(DURATION) --clients $(CLIENTS)

# The peers of make bench-peers, from Debian's packages; make test does not
# install them (their tests are skipped without them).
bench-deps: deps
	@{ command -v etcd >/dev/null 2>&1 && command -v redis-server >/dev/null 2>&1; } || { \
		echo "installing etcd-server and redis-server"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends etcd-server redis-server; }

# tokenstore side by side with etcd, Redis and memcached (BENCHMARKS.md).
# DURATION, CLIENTS and SCALE (e.g. 10000,1000000) tune; OUT collects the
# JSON, markdown report and plots.
DURATION ?= 10s
CLIENTS  ?= 64
SCALE    ?= 10000
OUT      ?= bench-out
bench-peers: bench-deps build
	mkdir -p $(OUT)
	bin/tokenstore-bench peers --clients $(CLIENTS) --duration $(DURATION) --scale $(SCALE) \
		--json $(OUT)/peers.json --report $(OUT)/peers.md --plots $(OUT)/plots

# A two-DC cluster in network namespaces (40ms cross-DC round trip) under
# process and network faults, its history checked for linearizability,
# exactly-once use and lost writes (BENCHMARKS.md); needs root.
# CHAOS_DURATION and SEED tune; the history, report and timeline go to
# $(OUT)/chaos. make test runs a short one (TestBenchChaos).
CHAOS_DURATION ?= 10m
SEED           ?= 42
bench-chaos: build
	bin/tokenstore-bench chaos --dcs a:3,b:2 --duration $(CHAOS_DURATION) --seed $(SEED) \
		--faults kill-leader,partition-primary,kill-node,pause,partition-follower \
		--fault-every 10s --downtime 3s --partition-time 8s --clients-per-dc 4 \
		--out $(OUT)/chaos

# Latency across datacenters as users meet it: the chaos bench's network
# (40ms cross-DC round trip) without faults or jitter, clients in every DC
# and at the leader; latency per DC and operation and the verdicts of the
# cross-DC targets (BENCHMARKS.md) go to $(OUT)/xdc.md and xdc.json; needs
# root. XDC_DURATION tunes; make test runs a short one (TestBenchXDC).
XDC_DURATION ?= 60s
bench-xdc: build
	mkdir -p $(OUT)
	bin/tokenstore-bench xdc --dcs a:3,b:2 --latency 40ms --jitter 0 --duration $(XDC_DURATION) --clients-per-dc 4 \
		--json $(OUT)/xdc.json --report $(OUT)/xdc.md

# A million tokens expiring within a minute under lookups, on one node:
# lookup latency before, during and after, the GC rate, and the time until
# only the live tokens are left (BENCHMARKS.md, mass expiry). EXPIRY_TOKENS
# tunes; the JSON goes to $(OUT)/expiry.json.
EXPIRY_TOKENS ?= 1000000
bench-expiry: build
	mkdir -p $(OUT)
	bin/tokenstore-bench expiry --tokens $(EXPIRY_TOKENS) --window 1m --gc-grace 10s --expire-after 6m \
		--json $(OUT)/expiry.json

clean:
	rm -rf bin
