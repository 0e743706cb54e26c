# Maestro: `make run` starts the platform, `make test` runs every test.
GO ?= go
# go1.26.10 fixes net/http, crypto/tls and crypto/x509 vulnerabilities that
# govulncheck reports against go1.26.8 (see go.mod's toolchain line); the go
# command fetches it through the module proxy. GOTOOLCHAIN=local opts out.
export GOTOOLCHAIN ?= go1.26.10
BIN := bin/maestro

.PHONY: all build run test bench vet lint fuzz vulncheck clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/maestro

## run: the whole platform in one process (embedded NATS, managed PostgreSQL)
run: build
	./$(BIN) serve --log-format text

## test: vet + every test (starts its own PostgreSQL and NATS; needs PostgreSQL server binaries)
test:
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 30m ./...

## bench: micro-benchmarks of hot paths, then the load command's table
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./internal/bench/
	$(GO) test -run '^$$' -bench 'EvolveArtifacts|ModelAsOf' -benchmem ./handlers/registry/
	$(GO) run ./internal/bench/cmd/maestro-bench $(BENCHFLAGS)

## fuzz: run each fuzz target for a while (seed corpora already run in `make test`)
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzVerify -fuzztime 30s ./auth/
	$(GO) test -run '^$$' -fuzz FuzzHashVerifyEncoded -fuzztime 30s ./auth/
	$(GO) test -run '^$$' -fuzz FuzzDecodeJSON -fuzztime 30s ./api/
	$(GO) test -run '^$$' -fuzz FuzzIdempotencyKey -fuzztime 30s ./api/
	$(GO) test -run '^$$' -fuzz FuzzVersionBody -fuzztime 30s ./api/
	$(GO) test -run '^$$' -fuzz FuzzCommandText -fuzztime 30s ./api/
	$(GO) test -run '^$$' -fuzz FuzzCanonicalJSON -fuzztime 30s ./handlers/
	$(GO) test -run '^$$' -fuzz FuzzDecodeCursor -fuzztime 30s ./projections/
	$(GO) test -run '^$$' -fuzz FuzzNormalizeEmail -fuzztime 30s ./handlers/identity/

lint:
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

## vulncheck: govulncheck; VULNDB=file:///path for an offline database (see docs/ARCHITECTURE.md)
vulncheck:
	$(GO) run golang.org/x/vuln/cmd/govulncheck@v1.9.0 $(if $(VULNDB),-db $(VULNDB)) ./...

clean:
	rm -rf bin
