# tenant-access-operator. `make help` lists the targets.
#
# Slow things are cached outside the repository (kube-apiserver build, helm 4 and 3, promtool) in
# $(TENANT_ACCESS_CACHE) (default ~/.cache/tenant-access-operator) and in ./target.

SHELL := /bin/bash
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: help build release fmt lint test unit-test deps toolchain crds demo bench

help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 14

build: toolchain ## Build the operator (tenant-access) and the emulators (debug).
	$(CARGO) build --workspace --bins

release: toolchain ## Build optimized binaries into target/release.
	$(CARGO) build --workspace --bins --release

fmt: ## Format the code.
	$(CARGO) fmt --all

lint: toolchain ## Check formatting, clippy and the API docs (warnings are errors).
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps

deps: ## Install what the tests need: etcd, a real kube-apiserver (built once, cached), helm 4 and 3, promtool, chdb, Lua.
	hack/install-deps.sh

toolchain:
	@$(CARGO) nextest --version >/dev/null 2>&1 || $(CARGO) install --locked cargo-nextest

test: toolchain deps ## Run every test: unit tests and integration tests against a real API server.
	hack/with-cluster.sh $(CARGO) nextest run --workspace --no-fail-fast

unit-test: toolchain deps ## Run the tests that need no cluster (helm 4 and 3, promtool and Lua from `deps`).
	$(CARGO) nextest run --workspace --lib --bins --test chart_render

crds: ## Regenerate crds/ from the Rust types (and the chart's copy).
	$(CARGO) run --quiet --bin tenant-access -- crd --output-dir crds
	cp crds/*.yaml charts/tenant-access-operator/files/crds/

demo: build deps ## Local API server + emulators + operator + examples, end to end.
	hack/demo.sh

bench: ## Benchmarks (BENCHMARKS.md): convergence, rotation, idle, memory, token core; BENCH_ARGS="..." to tune.
	hack/bench.sh
