#!/usr/bin/env bash
# Run a command against a real Kubernetes API server.
#
# Usage: hack/with-cluster.sh CMD [ARGS...]
#   e.g. hack/with-cluster.sh cargo nextest run --workspace
#
# If TEST_KUBECONFIG is already set (kind, k3d, any cluster), CMD simply runs against it.
# Otherwise: install the dependencies if needed (hack/install-deps.sh), start a local etcd +
# kube-apiserver in a temp dir (hack/cluster.sh up), export
#   TEST_KUBECONFIG         admin kubeconfig (user `admin`, group system:masters)
#   TEST_TENANT_KUBECONFIG  unprivileged kubeconfig (user `tenant-dev`)
#   HELM, HELM3, PROMTOOL, KUBE_APISERVER, ETCD, LUA  the tool paths from install-deps
#   CHDB_PYTHON             the Python with chdb (real ClickHouse for the Tinybird emulator's
#                           data sources), unless already set
# run CMD, and always stop the cluster afterwards (EXIT/INT/TERM traps, plus a watchdog that
# stops it if this script is killed outright). Exits with CMD's exit code.
#
# TENANT_ACCESS_KEEP_CLUSTER_DIR=1 keeps the temp dir (logs, etcd data) after the run.
set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if [ $# -eq 0 ]; then
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//' >&2
  exit 2
fi

if [ -n "${TEST_KUBECONFIG:-}" ]; then
  if [ -z "${CHDB_PYTHON:-}" ]; then
    # The cached chdb venv install-deps makes, when it is there (the emulator tests say so
    # clearly when it is not).
    cache="${TENANT_ACCESS_CACHE:-${HOME:-/root}/.cache/tenant-access-operator}"
    [ -x "$cache/chdb-4.4.0/bin/python" ] && export CHDB_PYTHON="$cache/chdb-4.4.0/bin/python"
  fi
  exec "$@"
fi

# Tools (quiet when everything is present).
while IFS= read -r line; do
  case "$line" in
    KUBE_APISERVER=* | ETCD=* | HELM=* | HELM3=* | PROMTOOL=* | LUA=*) export "${line?}" ;;
    CHDB_PYTHON=*) [ -n "${CHDB_PYTHON:-}" ] || export "${line?}" ;;
  esac
done < <("$HACK_DIR/install-deps.sh" --print-env)
if [ -z "${KUBE_APISERVER:-}" ] || [ -z "${ETCD:-}" ]; then
  echo "with-cluster: hack/install-deps.sh failed" >&2
  exit 1
fi

CLUSTER_DIR="$(mktemp -d "${TMPDIR:-/tmp}/tenant-access-cluster.XXXXXX")"
purge_flag=--purge
[ "${TENANT_ACCESS_KEEP_CLUSTER_DIR:-0}" = 1 ] && purge_flag=

# shellcheck disable=SC2317 # invoked through the EXIT trap
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  "$HACK_DIR/cluster.sh" down "$CLUSTER_DIR" ${purge_flag:+"$purge_flag"} || true
  if [ -z "$purge_flag" ]; then echo "with-cluster: cluster files kept in $CLUSTER_DIR" >&2; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

owner_flags=(--owner-pid $$)
[ -n "$purge_flag" ] && owner_flags+=(--purge-on-owner-exit)
while IFS= read -r line; do
  case "$line" in
    TEST_KUBECONFIG=* | TEST_TENANT_KUBECONFIG=* | APISERVER_URL=*) export "${line?}" ;;
  esac
done < <("$HACK_DIR/cluster.sh" up "$CLUSTER_DIR" "${owner_flags[@]}")
if [ -z "${TEST_KUBECONFIG:-}" ]; then
  echo "with-cluster: the cluster did not start" >&2
  exit 1
fi

set +e
"$@"
rc=$?
set -e
exit "$rc"
