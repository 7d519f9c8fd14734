# The binary is bind-mounted into images that have no libc, so it must be
# fully static; cgo stays on because runc's nsenter is C. scripts/build.sh
# holds the recipe (musl when available) for make, tests and the harness.
GO        ?= go
BIN       := bin/lectic-nix-sandbox

.PHONY: all build test bench vet clean

all: build

build: $(BIN)

$(BIN): $(shell find . -name '*.go' -not -path './bin/*') go.mod go.sum flake.nix flake.lock lectic.yaml packages.example.nix scripts/build.sh
	scripts/build.sh $@

# Every test, unit and end-to-end. Integration tests build their own binary
# with scripts/build.sh.
test:
	CGO_ENABLED=1 $(GO) test -count=1 -timeout 40m ./...

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }

bench: $(BIN)
	CGO_ENABLED=1 $(GO) run ./cmd/sandbox-bench -bin $(BIN) -out bench-results

clean:
	rm -rf bin bench-results
