GO       ?= go
FUZZTIME ?= 10s

.PHONY: all build run test check fuzz clean

all: build

build:
	$(GO) build -o bin/tokenstore ./cmd/tokenstore

# The embedded default: one node, data in ./data, API on 127.0.0.1:7400.
run:
	$(GO) run ./cmd/tokenstore serve

# Everything that must pass before a change lands.
test: check
	$(GO) test -race -count=1 ./...
	$(MAKE) fuzz

check:
	@unformatted=$$(gofmt -l .); if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...

# Each fuzz target runs briefly; longer runs: make fuzz FUZZTIME=10m.
fuzz:
	$(GO) test -run='^$$' -fuzz='^FuzzParse$$' -fuzztime=$(FUZZTIME) ./token
	$(GO) test -run='^$$' -fuzz='^FuzzDecodeIssue$$' -fuzztime=$(FUZZTIME) ./api
	$(GO) test -run='^$$' -fuzz='^FuzzDecodeLookup$$' -fuzztime=$(FUZZTIME) ./api

clean:
	rm -rf bin
