#!/usr/bin/env bash
# The main job end to end, on this machine: a real kube-apiserver + etcd, the Tinybird and Clerk
# emulators, the operator, the examples applied; a token issued, used against Tinybird (it reads
# only its tenant's rows), and rotated with the workspace admin token.
#
# Usage: hack/demo.sh          (make demo builds first)
#   DEMO_KEEP=1 hack/demo.sh   leave everything running at the end (prints how to reach it;
#                              stop it with Ctrl-C)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/tenant-access-demo.XXXXXX")"
NS=demo
PIDS=()

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() {
  printf '$ %s\n' "$*"
  "$@"
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  "$ROOT/hack/cluster.sh" down "$WORK/cluster" --purge >/dev/null 2>&1 || true
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

for bin in tenant-access tenant-access-emulators; do
  [ -x "$BIN/$bin" ] || { echo "demo: $BIN/$bin is missing: run 'make demo' (it builds first)" >&2; exit 1; }
done

step "A real Kubernetes API server (etcd + kube-apiserver v1.20.2 on loopback)"
eval "$("$ROOT/hack/cluster.sh" up "$WORK/cluster" --owner-pid $$ | grep '^TEST_KUBECONFIG=')"
export KUBECONFIG="$TEST_KUBECONFIG"
run kubectl version --short 2>/dev/null | grep -i server || true
run kubectl apply -f "$ROOT/crds/"
kubectl wait --for=condition=Established crd --all --timeout=60s >/dev/null

step "The Tinybird and Clerk emulators (stand-ins for the SaaS APIs)"
# Real ClickHouse (chdb, installed by `make deps`) runs the emulator's pipes written as nodes.
if [ -z "${CHDB_PYTHON:-}" ]; then
  CHDB_PYTHON="$("$ROOT/hack/install-deps.sh" --print-env | sed -n 's/^CHDB_PYTHON=//p')"
  export CHDB_PYTHON
fi
"$BIN/tenant-access-emulators" both --tinybird-listen 127.0.0.1:0 --clerk-listen 127.0.0.1:0 \
  --write-admin-token "$WORK/admin-token" --write-secret-key "$WORK/clerk-key" \
  >"$WORK/emulators.out" 2>"$WORK/emulators.log" &
PIDS+=($!)
for _ in $(seq 100); do grep -q clerk "$WORK/emulators.out" 2>/dev/null && break; sleep 0.1; done
TINYBIRD="$(awk '/^tinybird emulator:/{print $3}' "$WORK/emulators.out")"
CLERK="$(awk '/^clerk emulator:/{print $3}' "$WORK/emulators.out")"
echo "Tinybird: $TINYBIRD   Clerk: $CLERK"

step "The workspace admin token goes into ONE Secret; a TinybirdWorkspace points at it"
run kubectl create namespace "$NS"
run kubectl -n "$NS" create secret generic tinybird-admin --from-file=token="$WORK/admin-token"
run kubectl -n "$NS" create secret generic clerk-secret-key --from-file=secret-key="$WORK/clerk-key"
echo "Each Secret names the workspaces that may use it (the operator reads no other):"
run kubectl -n "$NS" annotate secret tinybird-admin clerk-secret-key tenantaccess.dev/allowed-workspaces=analytics
{
  sed "s|# apiUrl: https://api.tinybird.co|apiUrl: $TINYBIRD|" "$ROOT/examples/workspace.yaml"
  printf '  clerk:\n    secretKeySecretRef: {name: clerk-secret-key, key: secret-key}\n    apiUrl: %s\n' "$CLERK"
} | kubectl -n "$NS" apply -f -

step "The operator"
"$BIN/tenant-access" run --kubeconfig "$KUBECONFIG" --namespaces "$NS" --admin-address 127.0.0.1:0 >"$WORK/operator.log" 2>&1 &
PIDS+=($!)

step "A tenant: examples/tenant-access.yaml (acme may read only org=acme rows)"
run kubectl -n "$NS" apply -f "$ROOT/examples/tenant-access.yaml" -f "$ROOT/examples/clerk-template.yaml"
run kubectl -n "$NS" wait --for=condition=Ready tenantaccess/acme tenantaccess/tinybird-clerk --timeout=90s
run kubectl -n "$NS" get tenantaccess,tinybirdworkspace,secret,configmap
run "$BIN/tenant-access" status acme -n "$NS" --kubeconfig "$KUBECONFIG"

step "The token, explained and verified offline"
TOKEN="$(kubectl -n "$NS" get secret acme-tinybird-token -o jsonpath='{.data.token}' | base64 -d)"
printf '%s' "$TOKEN" | run "$BIN/tenant-access" inspect - --admin-token-file "$WORK/admin-token"

step "The token used against Tinybird: asking for org=globex still returns only acme's rows"
printf '$ curl -H "Authorization: Bearer $TOKEN" %s\n' "$TINYBIRD/v0/pipes/top_pages.json?org=globex"
curl -s -H "Authorization: Bearer $TOKEN" "$TINYBIRD/v0/pipes/top_pages.json?org=globex" | jq -c '.data[] | {org, pathname, hits}'

step "The Clerk template: rendered to a ConfigMap and pushed to Clerk (the signing key is never written down)"
run kubectl -n "$NS" get configmap tinybird-clerk-clerk-template -o jsonpath='{.data.template\.json}'
echo
run kubectl -n "$NS" wait --for=condition=ClerkTemplateSynced tenantaccess/tinybird-clerk --timeout=60s
printf '$ curl -H "Authorization: Bearer $CLERK_SECRET_KEY" %s\n' "$CLERK/jwt_templates"
curl -s -H "Authorization: Bearer $(cat "$WORK/clerk-key")" "$CLERK/jwt_templates" | jq -c '.[] | {id, name, signing_algorithm, claims}'
echo "A frontend asks Clerk for a session token from the template (here: a user of org acme):"
CLERK_JWT="$(curl -s -X POST -H "Authorization: Bearer $(cat "$WORK/clerk-key")" "$CLERK/sessions/sess_demo/tokens/tinybird" | jq -r .jwt)"
printf '$ curl -H "Authorization: Bearer $CLERK_JWT" %s\n' "$TINYBIRD/v0/pipes/top_pages.json?org=globex"
curl -s -H "Authorization: Bearer $CLERK_JWT" "$TINYBIRD/v0/pipes/top_pages.json?org=globex" | jq -c '.data[] | {org, user, hits}'

step "Rotation: the admin token is refreshed at Tinybird and the Secret updated"
OLD_TOKEN="$TOKEN"
TOKEN_ID="$(curl -s "$TINYBIRD/_emulator/admin-token" | jq -r .id)"
NEW_ADMIN="$(curl -s -X POST -H "Authorization: Bearer $(cat "$WORK/admin-token")" \
  "$TINYBIRD/v0/tokens/$TOKEN_ID/refresh" | jq -r .token)"
# A patch of the token only: the Secret keeps its allowed-workspaces annotation.
kubectl -n "$NS" patch secret tinybird-admin --type merge \
  -p "$(jq -n --arg token "$NEW_ADMIN" '{stringData: {token: $token}}')" >/dev/null
echo "admin token rotated; waiting for the operator to re-sign"
for _ in $(seq 120); do
  [ "$(kubectl -n "$NS" get tenantaccess acme -o jsonpath='{.status.token.revision}')" = 2 ] && break
  sleep 0.5
done
run kubectl -n "$NS" get tenantaccess acme -o custom-columns=NAME:.metadata.name,REVISION:.status.token.revision,KEY:.status.token.signingKeyFingerprint,EXPIRES:.status.token.expiresAt
NEW_TOKEN="$(kubectl -n "$NS" get secret acme-tinybird-token -o jsonpath='{.data.token}' | base64 -d)"
printf 'old token -> HTTP %s\n' "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $OLD_TOKEN" "$TINYBIRD/v0/pipes/top_pages.json")"
printf 'new token -> HTTP %s\n' "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $NEW_TOKEN" "$TINYBIRD/v0/pipes/top_pages.json")"
for _ in $(seq 120); do
  [ "$(kubectl -n "$NS" get tenantaccess tinybird-clerk -o jsonpath='{.status.clerkTemplate.signingKeyFingerprint}')" = \
    "$(kubectl -n "$NS" get tinybirdworkspace analytics -o jsonpath='{.status.signingKeyFingerprint}')" ] && break
  sleep 0.5
done
NEW_CLERK_JWT="$(curl -s -X POST -H "Authorization: Bearer $(cat "$WORK/clerk-key")" "$CLERK/sessions/sess_demo/tokens/tinybird" | jq -r .jwt)"
printf 'Clerk token minted before the rotation -> HTTP %s\n' "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $CLERK_JWT" "$TINYBIRD/v0/pipes/top_pages.json")"
printf 'Clerk token minted after (new key pushed to Clerk) -> HTTP %s\n' "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $NEW_CLERK_JWT" "$TINYBIRD/v0/pipes/top_pages.json")"
run kubectl -n "$NS" get events --sort-by=.metadata.creationTimestamp -o custom-columns=REASON:.reason,OBJECT:.involvedObject.name,MESSAGE:.message

step "Metrics (computed from the operator's caches at scrape time)"
ADMIN="$(sed -n 's/.*admin server listening.*address=\([0-9.:]*\).*/\1/p' "$WORK/operator.log" | head -1)"
curl -s "http://$ADMIN/metrics" | grep -E '^tenant_access_(token_expiry|token_renewal|ready|tokens_signed)' || true

if [ "${DEMO_KEEP:-0}" = 1 ]; then
  step "Still running (Ctrl-C stops everything)"
  echo "export KUBECONFIG=$KUBECONFIG"
  echo "Tinybird emulator: $TINYBIRD   operator log: $WORK/operator.log"
  wait
fi
step "Done: cluster, emulators and operator stopped"
