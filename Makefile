# Maestro: `make run` starts the platform, `make test` runs every test.
GO ?= go
# go1.26.10 fixes net/http, crypto/tls and crypto/x509 vulnerabilities that
# govulncheck reports against go1.26.8 (see go.mod's toolchain line); the go
# command fetches it through the module proxy. GOTOOLCHAIN=local opts out.
export GOTOOLCHAIN ?= go1.26.10
BIN := bin/maestro

.PHONY: all build run test chaos npm-deps bench ui-bench vet lint fuzz vulncheck clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/maestro

## run: the whole platform in one process (embedded NATS, managed PostgreSQL)
run: build
	./$(BIN) serve --log-format text

## test: vet + every test (starts its own PostgreSQL and NATS; needs PostgreSQL server binaries, Node.js, npm and Chromium)
test: npm-deps
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 30m ./...

## chaos: the chaos scenarios against real maestro processes, CHAOS_REPS times each (make test runs each once)
CHAOS_REPS ?= 20
chaos:
	$(GO) test -count=1 -v -timeout 180m ./internal/chaos/ -chaos.reps $(CHAOS_REPS)

# The npm mlflow client that api/mlflow_npm_test.go drives, pinned by its
# package-lock.json; installed with npm ci when node_modules is missing or
# older than package.json or the lock file.
NPM_DIR := api/testdata/mlflow-npm
# axe-core, which the browser tests inject into each page they check
# (internal/webtest Axe); installed the same way.
AXE_DIR := internal/webtest/testdata/axe

## npm-deps: install the npm mlflow client the api tests run and axe-core for the browser tests (needs Node.js and npm)
npm-deps: $(NPM_DIR)/node_modules/.package-lock.json $(AXE_DIR)/node_modules/.package-lock.json

$(NPM_DIR)/node_modules/.package-lock.json: $(NPM_DIR)/package.json $(NPM_DIR)/package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo "make: npm is needed for the MLflow npm client test (apt-get install nodejs npm)" >&2; exit 1; }
	npm ci --prefix $(NPM_DIR) --no-audit --no-fund
	@touch $@

$(AXE_DIR)/node_modules/.package-lock.json: $(AXE_DIR)/package.json $(AXE_DIR)/package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo "make: npm is needed for axe-core, the browser tests' accessibility checker (apt-get install nodejs npm)" >&2; exit 1; }
	npm ci --prefix $(AXE_DIR) --no-audit --no-fund
	@touch $@

## ui-bench: each web UI page loaded in Chromium on a model of 500 versions: load time and weight (needs chromium)
ui-bench: npm-deps
	$(GO) test -run '^$$' -bench UIPageLoad -benchtime 1x -timeout 30m -v ./api/ | grep -v '^=== '

## bench: micro-benchmarks of hot paths, then the load command's table
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./internal/bench/
	$(GO) test -run '^$$' -bench 'MetricsBody' -benchmem ./api/
	$(GO) test -run '^$$' -bench 'MetricsQueue' -benchmem ./projections/
	$(GO) test -run '^$$' -bench 'EvolveArtifacts|ModelAsOf' -benchmem ./handlers/registry/
	# Run search over 100,000 runs (filled through the projections first, ~3 min; MAESTRO_BENCH_SEARCH_DATABASE_URL keeps them)
	$(GO) test -run '^$$' -bench SearchRuns -benchtime 200x -timeout 60m ./projections/
	$(GO) run ./internal/bench/cmd/maestro-bench $(BENCHFLAGS)

## fuzz: run each fuzz target for a while (seed corpora already run in `make test`)
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzVerify -fuzztime 30s ./auth/
	$(GO) test -run '^$$' -fuzz FuzzHashVerifyEncoded -fuzztime 30s ./auth/
	$(GO) test -run '^$$' -fuzz FuzzDecodeJSON -fuzztime 30s ./api/
	$(GO) test -run '^$$' -fuzz FuzzIdempotencyKey -fuzztime 30s ./api/
	$(GO) test -run '^$$' -fuzz FuzzVersionBody -fuzztime 30s ./api/
	$(GO) test -run '^$$' -fuzz FuzzCommandText -fuzztime 30s ./api/
	$(GO) test -run '^$$' -fuzz FuzzMetricsBody -fuzztime 30s ./api/
	$(GO) test -run '^$$' -fuzz FuzzMLflowDecode -fuzztime 30s ./api/
	$(GO) test -run '^$$' -fuzz FuzzDecodeMetricsLogged -fuzztime 30s ./events/
	$(GO) test -run '^$$' -fuzz FuzzCanonicalJSON -fuzztime 30s ./handlers/
	$(GO) test -run '^$$' -fuzz FuzzDecodeCursor -fuzztime 30s ./projections/
	$(GO) test -run '^$$' -fuzz FuzzParse -fuzztime 30s ./filter/
	$(GO) test -run '^$$' -fuzz FuzzNormalizeEmail -fuzztime 30s ./handlers/identity/

lint:
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

## vulncheck: govulncheck; VULNDB=file:///path for an offline database (see docs/ARCHITECTURE.md)
vulncheck:
	$(GO) run golang.org/x/vuln/cmd/govulncheck@v1.9.0 $(if $(VULNDB),-db $(VULNDB)) ./...

clean:
	rm -rf bin
