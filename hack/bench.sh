#!/usr/bin/env bash
# make bench: build the operator and the benchmark harness (release), then run issue 9's
# scenarios against a fresh local kube-apiserver + etcd (or the cluster of TEST_KUBECONFIG) and
# the Tinybird emulator, with the operator as a separate release process.
#
# Usage: hack/bench.sh [tenant-access-bench flags...]     (also: BENCH_ARGS="..." make bench)
#   hack/bench.sh --help                                   every flag and its default
#   hack/bench.sh --scenarios token-core                   no cluster needed
#   hack/bench.sh --tenants 1000 --runs 3 --idle-seconds 240 --memory-tenants 10000
#
# Results: a Markdown table on stdout, target/bench/results.{md,json}, operator logs (and its
# /metrics when it serves them) under target/bench/.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CARGO="${CARGO:-cargo}"

if [ -z "${TEST_KUBECONFIG:-}" ]; then
  # etcd and kube-apiserver v1.20.2 (built once, cached outside the repository).
  hack/install-deps.sh
fi
# Two builds on purpose: the operator binary is built alone, exactly as it ships (the harness's
# dependencies would otherwise unify features into it).
"$CARGO" build --release --bin tenant-access -p tenant-access-operator
"$CARGO" build --release -p tenant-access-bench

# shellcheck disable=SC2086 # BENCH_ARGS is a list of flags
exec target/release/tenant-access-bench ${BENCH_ARGS:-} "$@"
