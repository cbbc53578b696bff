#!/usr/bin/env bash
# A throwaway Kubernetes control plane on loopback: etcd + kube-apiserver (v1.20.2), no kubelet,
# scheduler or controller-manager. See the shared docs/local-cluster.md for what works on it.
#
# Usage:
#   hack/cluster.sh up DIR [--owner-pid PID] [--purge-on-owner-exit]
#       Start etcd and kube-apiserver on free loopback ports with all state under DIR (created
#       if missing). Waits until /readyz answers ok (TENANT_ACCESS_CLUSTER_TIMEOUT seconds,
#       default 60). Writes DIR/admin.kubeconfig (user `admin`, group system:masters) and
#       DIR/tenant-dev.kubeconfig (user `tenant-dev`, no groups besides system:authenticated),
#       DIR/operator.kubeconfig (user `operator`, group system:masters: an operator whose every
#       request is audited), DIR/cluster.env, pid files and logs (DIR/logs/; audit.log has the
#       requests of ServiceAccounts and of user `operator`, with their response codes). Prints
#       these lines on stdout:
#         TEST_KUBECONFIG=DIR/admin.kubeconfig
#         TEST_TENANT_KUBECONFIG=DIR/tenant-dev.kubeconfig
#         APISERVER_URL=https://127.0.0.1:PORT
#       --owner-pid PID: a watchdog runs `down DIR` as soon as PID exits (even if it is
#       SIGKILLed), so nothing is left running. --purge-on-owner-exit: the watchdog also
#       removes DIR afterwards.
#   hack/cluster.sh down DIR [--purge]
#       Stop the apiserver first, then etcd (SIGTERM, SIGKILL after a grace period), and the
#       watchdog. Idempotent. --purge also removes DIR (only if it is a cluster directory).
#   hack/cluster.sh status DIR     exit 0 when both processes run (prints the env lines)
#   Faults, for tests (the cluster keeps its data, ports and certificates):
#   hack/cluster.sh apiserver-stop DIR    kill kube-apiserver (SIGKILL; etcd keeps running)
#   hack/cluster.sh apiserver-start DIR   start it again on the same port and etcd
#   hack/cluster.sh etcd-pause DIR        SIGSTOP etcd (requests hang, nothing is lost)
#   hack/cluster.sh etcd-resume DIR       SIGCONT etcd
#
# Environment:
#   KUBE_APISERVER, ETCD    binaries to use (default: from hack/install-deps.sh --print-env,
#                           which installs them when missing)
#   TENANT_ACCESS_CLUSTER_TIMEOUT  readiness timeout in seconds (default 60)
#
# Tokens are random per cluster, live only in DIR (mode 0700) and are never printed.
set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SELF="$HACK_DIR/$(basename "${BASH_SOURCE[0]}")"
MARKER=.tenant-access-cluster
GRACE_SECONDS=15

log() { echo "cluster: $*" >&2; }
die() {
  echo "cluster: ERROR: $*" >&2
  exit 1
}

usage() {
  sed -n '2,/^set -euo/p' "$SELF" | sed '$d' | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# --- process helpers ----------------------------------------------------------------------

# alive PID: the process exists and is not a zombie.
alive() {
  local pid="$1" state
  [ -n "$pid" ] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  if [ -r "/proc/$pid/stat" ]; then
    state="$(sed -E 's/^[0-9]+ \(.*\) ([A-Za-z]).*/\1/' "/proc/$pid/stat" 2>/dev/null || true)"
    [ "$state" != Z ] || return 1
  fi
  return 0
}

# start time of PID (clock ticks since boot), to detect pid reuse.
start_time() {
  [ -r "/proc/$1/stat" ] || return 0
  sed -E 's/^[0-9]+ \(.*\) //' "/proc/$1/stat" 2>/dev/null | awk '{print $20}'
}

# owns PID DIR: the process's command line mentions DIR (guards against pid reuse).
owns() {
  local pid="$1" dir="$2"
  [ -r "/proc/$pid/cmdline" ] || return 0 # no procfs: trust the pid file
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$dir"
}

read_pid() {
  local f="$1"
  [ -f "$f" ] || return 0
  tr -dc '0-9' <"$f"
}

# stop_process NAME PIDFILE DIR [GRACE]: SIGTERM, wait GRACE seconds (default GRACE_SECONDS),
# SIGKILL.
stop_process() {
  local name="$1" pidfile="$2" dir="$3" grace="${4:-$GRACE_SECONDS}" pid i
  pid="$(read_pid "$pidfile")"
  if [ -z "$pid" ] || ! alive "$pid" || ! owns "$pid" "$dir"; then
    rm -f "$pidfile"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  kill -CONT "$pid" 2>/dev/null || true # a paused process (etcd-pause) handles SIGTERM too
  for ((i = 0; i < grace * 10; i++)); do
    alive "$pid" || break
    sleep 0.1
  done
  if alive "$pid"; then
    [ "$grace" = 0 ] || log "$name (pid $pid) did not stop within ${grace}s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
      alive "$pid" || break
      sleep 0.1
    done
  fi
  rm -f "$pidfile"
}

# --- ports --------------------------------------------------------------------------------

port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Random ports below the Linux ephemeral range (32768+), so outgoing connections do not take
# them. Binding can still race with another cluster starting at the same moment: callers retry.
pick_port() {
  local p i
  for ((i = 0; i < 200; i++)); do
    p=$((20000 + (RANDOM * 32768 + RANDOM) % 12000))
    case " $* " in *" $p "*) continue ;; esac
    port_in_use "$p" || {
      echo "$p"
      return 0
    }
  done
  die "no free loopback port found"
}

# --- binaries -----------------------------------------------------------------------------

resolve_binaries() {
  if [ -z "${KUBE_APISERVER:-}" ] || [ -z "${ETCD:-}" ]; then
    local line
    while IFS= read -r line; do
      case "$line" in
        KUBE_APISERVER=*) [ -n "${KUBE_APISERVER:-}" ] || KUBE_APISERVER="${line#*=}" ;;
        ETCD=*) [ -n "${ETCD:-}" ] || ETCD="${line#*=}" ;;
      esac
    done < <("$HACK_DIR/install-deps.sh" --print-env)
  fi
  [ -x "${KUBE_APISERVER:-}" ] || die "kube-apiserver not found (KUBE_APISERVER='${KUBE_APISERVER:-}')"
  [ -x "${ETCD:-}" ] || die "etcd not found (ETCD='${ETCD:-}')"
}

# --- up -----------------------------------------------------------------------------------

random_token() {
  openssl rand -hex 32
}

write_kubeconfig() {
  local file="$1" user="$2" token="$3" url="$4" ca="$5"
  (
    umask 077
    cat >"$file.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: tenant-access-local
  cluster:
    server: $url
    certificate-authority: $ca
users:
- name: $user
  user:
    token: $token
contexts:
- name: $user@tenant-access-local
  context:
    cluster: tenant-access-local
    user: $user
    namespace: default
current-context: $user@tenant-access-local
EOF
    mv -f "$file.tmp" "$file"
  )
}

print_env() {
  local dir="$1"
  echo "TEST_KUBECONFIG=$dir/admin.kubeconfig"
  echo "TEST_TENANT_KUBECONFIG=$dir/tenant-dev.kubeconfig"
  grep '^APISERVER_URL=' "$dir/cluster.env"
}

tail_logs() {
  local dir="$1" f
  for f in "$dir/logs/etcd.log" "$dir/logs/kube-apiserver.log"; do
    [ -f "$f" ] || continue
    echo "----- last lines of $f -----" >&2
    tail -n 25 "$f" >&2
  done
}

# start_etcd DIR CLIENT_PORT PEER_PORT: returns 1 when etcd exits early (port taken).
start_etcd() {
  local dir="$1" cport="$2" pport="$3" i
  rm -rf "$dir/etcd"
  mkdir -p "$dir/etcd"
  chmod 700 "$dir/etcd"
  # shellcheck disable=SC2016 # expanded by the inner shell: it records its own pid, then execs
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$dir/etcd.pid" \
    "$ETCD" --name default --data-dir "$dir/etcd" \
    --listen-client-urls "http://127.0.0.1:$cport" --advertise-client-urls "http://127.0.0.1:$cport" \
    --listen-peer-urls "http://127.0.0.1:$pport" --initial-advertise-peer-urls "http://127.0.0.1:$pport" \
    --initial-cluster "default=http://127.0.0.1:$pport" --unsafe-no-fsync \
    --logger=zap --log-outputs=stderr \
    </dev/null >"$dir/logs/etcd.log" 2>&1 &
  local deadline=$((SECONDS + 30)) pid=''
  while [ "$SECONDS" -lt "$deadline" ]; do
    [ -n "$pid" ] || pid="$(read_pid "$dir/etcd.pid")"
    if [ -n "$pid" ] && ! alive "$pid"; then
      rm -f "$dir/etcd.pid"
      return 1
    fi
    if [ -n "$pid" ] && curl -fsS --max-time 2 "http://127.0.0.1:$cport/health" 2>/dev/null | grep -q '"health":"true"'; then
      return 0
    fi
    sleep 0.1
  done
  tail_logs "$dir"
  stop_process etcd "$dir/etcd.pid" "$dir"
  die "etcd did not become healthy within 30s"
}

# start_apiserver DIR PORT ETCD_PORT: returns 1 when the apiserver exits early (port taken).
start_apiserver() {
  local dir="$1" port="$2" eport="$3"
  # Audit only ServiceAccounts (an operator under its chart's RBAC): tests read which of its
  # requests were refused (403) from DIR/logs/audit.log instead of from its log messages.
  cat >"$dir/audit-policy.yaml" <<'EOF'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived, ResponseStarted]
rules:
  - level: Metadata
    userGroups: ["system:serviceaccounts"]
  - level: Metadata
    users: ["operator"]
  - level: None
EOF
  # shellcheck disable=SC2016 # expanded by the inner shell
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$dir/kube-apiserver.pid" \
    "$KUBE_APISERVER" \
    --etcd-servers="http://127.0.0.1:$eport" \
    --bind-address=127.0.0.1 --secure-port="$port" --insecure-port=0 \
    --advertise-address=127.0.0.1 \
    --cert-dir="$dir/pki" \
    --authorization-mode=RBAC \
    --token-auth-file="$dir/tokens.csv" \
    --service-account-issuer=https://kubernetes.default.svc \
    --service-account-key-file="$dir/sa.pub" \
    --service-account-signing-key-file="$dir/sa.key" \
    --service-cluster-ip-range=10.96.0.0/12 \
    --disable-admission-plugins=ServiceAccount \
    --endpoint-reconciler-type=none \
    --audit-policy-file="$dir/audit-policy.yaml" \
    --audit-log-path="$dir/logs/audit.log" --audit-log-format=json --audit-log-mode=blocking \
    </dev/null >"$dir/logs/kube-apiserver.log" 2>&1 &
  local timeout="${TENANT_ACCESS_CLUSTER_TIMEOUT:-60}"
  local deadline=$((SECONDS + timeout)) pid='' out
  while [ "$SECONDS" -lt "$deadline" ]; do
    [ -n "$pid" ] || pid="$(read_pid "$dir/kube-apiserver.pid")"
    if [ -n "$pid" ] && ! alive "$pid"; then
      rm -f "$dir/kube-apiserver.pid"
      if grep -qiE 'address already in use|bind: ' "$dir/logs/kube-apiserver.log"; then
        return 1
      fi
      tail_logs "$dir"
      stop_process etcd "$dir/etcd.pid" "$dir"
      die "kube-apiserver exited during startup"
    fi
    if [ -n "$pid" ] && [ -f "$dir/pki/apiserver.crt" ]; then
      out="$(curl -sS --max-time 2 --cacert "$dir/pki/apiserver.crt" "https://127.0.0.1:$port/readyz" 2>/dev/null || true)"
      [ "$out" = ok ] && return 0
    fi
    sleep 0.2
  done
  tail_logs "$dir"
  stop_process kube-apiserver "$dir/kube-apiserver.pid" "$dir"
  stop_process etcd "$dir/etcd.pid" "$dir"
  die "kube-apiserver did not answer /readyz=ok within ${timeout}s (logs in $dir/logs)"
}

cmd_up() {
  local dir="" owner="" purge_on_owner_exit=0
  while [ $# -gt 0 ]; do
    case "$1" in
      --owner-pid)
        [ $# -ge 2 ] || usage
        owner="$2"
        shift 2
        ;;
      --owner-pid=*)
        owner="${1#*=}"
        shift
        ;;
      --purge-on-owner-exit)
        purge_on_owner_exit=1
        shift
        ;;
      -*) usage ;;
      *)
        [ -z "$dir" ] || usage
        dir="$1"
        shift
        ;;
    esac
  done
  [ -n "$dir" ] || usage
  if [ -n "$owner" ]; then
    [[ "$owner" =~ ^[0-9]+$ ]] || die "--owner-pid needs a numeric pid"
    alive "$owner" || die "owner pid $owner is not running"
  fi

  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  chmod 700 "$dir"
  local p
  for p in etcd kube-apiserver; do
    local pid
    pid="$(read_pid "$dir/$p.pid")"
    if [ -n "$pid" ] && alive "$pid" && owns "$pid" "$dir"; then
      die "a cluster is already running in $dir ($p pid $pid); run: $SELF down $dir"
    fi
  done
  resolve_binaries
  local started=$SECONDS

  touch "$dir/$MARKER"
  mkdir -p "$dir/logs" "$dir/pki"
  (
    umask 077
    local admin_token tenant_token operator_token
    admin_token="$(random_token)"
    tenant_token="$(random_token)"
    operator_token="$(random_token)"
    printf '%s,admin,admin,"system:masters"\n%s,tenant-dev,tenant-dev\n%s,operator,operator,"system:masters"\n' \
      "$admin_token" "$tenant_token" "$operator_token" >"$dir/tokens.csv"
    openssl genrsa -out "$dir/sa.key" 2048 2>/dev/null
    openssl rsa -in "$dir/sa.key" -pubout -out "$dir/sa.pub" 2>/dev/null
  ) || die "could not generate tokens / service-account key"

  local attempt eport epeer aport
  for attempt in 1 2 3 4 5; do
    eport="$(pick_port)"
    epeer="$(pick_port "$eport")"
    start_etcd "$dir" "$eport" "$epeer" && break
    log "etcd could not start on ports $eport/$epeer (attempt $attempt); retrying"
    [ "$attempt" -lt 5 ] || {
      tail_logs "$dir"
      die "etcd failed to start"
    }
  done
  for attempt in 1 2 3 4 5; do
    aport="$(pick_port "$eport" "$epeer")"
    # A previous attempt may have left a self-signed cert for another port: fine, it is
    # issued for 127.0.0.1 and localhost, not for a port.
    start_apiserver "$dir" "$aport" "$eport" && break
    log "kube-apiserver could not bind port $aport (attempt $attempt); retrying"
    [ "$attempt" -lt 5 ] || {
      tail_logs "$dir"
      stop_process etcd "$dir/etcd.pid" "$dir"
      die "kube-apiserver failed to start"
    }
  done

  local url="https://127.0.0.1:$aport" ca="$dir/pki/apiserver.crt" admin_token tenant_token operator_token
  admin_token="$(sed -n '1s/,.*//p' "$dir/tokens.csv")"
  tenant_token="$(sed -n '2s/,.*//p' "$dir/tokens.csv")"
  operator_token="$(sed -n '3s/,.*//p' "$dir/tokens.csv")"
  write_kubeconfig "$dir/admin.kubeconfig" admin "$admin_token" "$url" "$ca"
  write_kubeconfig "$dir/tenant-dev.kubeconfig" tenant-dev "$tenant_token" "$url" "$ca"
  write_kubeconfig "$dir/operator.kubeconfig" operator "$operator_token" "$url" "$ca"
  cat >"$dir/cluster.env" <<EOF
APISERVER_URL=$url
APISERVER_PORT=$aport
ETCD_CLIENT_PORT=$eport
ETCD_PEER_PORT=$epeer
CA_FILE=$ca
ADMIN_KUBECONFIG=$dir/admin.kubeconfig
TENANT_KUBECONFIG=$dir/tenant-dev.kubeconfig
EOF

  if [ -n "$owner" ]; then
    local purge_flag=""
    [ "$purge_on_owner_exit" = 1 ] && purge_flag=--purge
    setsid bash "$SELF" __watchdog "$dir" "$owner" "$(start_time "$owner")" ${purge_flag:+"$purge_flag"} \
      </dev/null >"$dir/logs/watchdog.log" 2>&1 &
    echo $! >"$dir/watchdog.pid" # the watchdog rewrites it with its own pid
  fi
  log "cluster up in $((SECONDS - started))s: $url (data in $dir)"
  print_env "$dir"
}

# --- watchdog -----------------------------------------------------------------------------

cmd_watchdog() {
  local dir="$1" owner="$2" owner_start="${3:-}" purge="${4:-}"
  echo $$ >"$dir/watchdog.pid"
  while true; do
    if ! alive "$owner"; then break; fi
    if [ -n "$owner_start" ] && [ "$(start_time "$owner")" != "$owner_start" ]; then break; fi
    # Cluster stopped by someone else: nothing left to watch.
    [ -f "$dir/kube-apiserver.pid" ] || [ -f "$dir/etcd.pid" ] || exit 0
    sleep 1
  done
  echo "owner $owner exited; stopping the cluster in $dir"
  WATCHDOG_SELF=1 "$SELF" down "$dir" ${purge:+"$purge"}
}

# --- down ---------------------------------------------------------------------------------

cmd_down() {
  local dir="" purge=0
  while [ $# -gt 0 ]; do
    case "$1" in
      --purge)
        purge=1
        shift
        ;;
      -*) usage ;;
      *)
        [ -z "$dir" ] || usage
        dir="$1"
        shift
        ;;
    esac
  done
  [ -n "$dir" ] || usage
  [ -d "$dir" ] || return 0
  dir="$(cd "$dir" && pwd)"
  # apiserver first: if etcd goes first, the apiserver hangs and needs SIGKILL.
  stop_process kube-apiserver "$dir/kube-apiserver.pid" "$dir"
  stop_process etcd "$dir/etcd.pid" "$dir"
  if [ "${WATCHDOG_SELF:-0}" != 1 ]; then
    stop_process watchdog "$dir/watchdog.pid" "$dir"
  else
    rm -f "$dir/watchdog.pid"
  fi
  if [ "$purge" = 1 ]; then
    if [ -f "$dir/$MARKER" ]; then
      rm -rf "$dir"
    else
      log "not removing $dir: it is not a cluster directory (no $MARKER)"
    fi
  fi
}

cmd_status() {
  local dir="${1:-}"
  [ -n "$dir" ] || usage
  [ -d "$dir" ] || exit 1
  dir="$(cd "$dir" && pwd)"
  local p pid
  for p in etcd kube-apiserver; do
    pid="$(read_pid "$dir/$p.pid")"
    if [ -z "$pid" ] || ! alive "$pid"; then
      echo "$p: not running" >&2
      exit 1
    fi
  done
  print_env "$dir"
}

# --- faults -------------------------------------------------------------------------------

# cluster_dir DIR: the absolute directory of a running cluster made by `up`.
cluster_dir() {
  local dir="${1:-}"
  [ -n "$dir" ] || usage
  [ -f "$dir/$MARKER" ] || die "$dir is not a cluster directory"
  (cd "$dir" && pwd)
}

# SIGKILL (no grace): a graceful stop waits for open watches, so the outage would start at an
# unknown moment.
cmd_apiserver_stop() {
  local dir
  dir="$(cluster_dir "${1:-}")"
  stop_process kube-apiserver "$dir/kube-apiserver.pid" "$dir" 0
}

cmd_apiserver_start() {
  local dir port eport pid
  dir="$(cluster_dir "${1:-}")"
  pid="$(read_pid "$dir/kube-apiserver.pid")"
  if [ -n "$pid" ] && alive "$pid" && owns "$pid" "$dir"; then
    die "kube-apiserver already runs in $dir (pid $pid)"
  fi
  port="$(sed -n 's/^APISERVER_PORT=//p' "$dir/cluster.env")"
  eport="$(sed -n 's/^ETCD_CLIENT_PORT=//p' "$dir/cluster.env")"
  [ -n "$port" ] && [ -n "$eport" ] || die "$dir/cluster.env lacks the ports"
  resolve_binaries
  # Keep the log of the first run: the restarted server appends to its own file.
  [ -f "$dir/logs/kube-apiserver.log" ] && mv -f "$dir/logs/kube-apiserver.log" "$dir/logs/kube-apiserver.$(date +%s%N).log"
  start_apiserver "$dir" "$port" "$eport" || die "kube-apiserver could not bind port $port again"
}

# signal_etcd DIR SIGNAL
signal_etcd() {
  local dir pid
  dir="$(cluster_dir "$1")"
  pid="$(read_pid "$dir/etcd.pid")"
  { [ -n "$pid" ] && alive "$pid" && owns "$pid" "$dir"; } || die "etcd does not run in $dir"
  kill "-$2" "$pid"
}

[ $# -ge 1 ] || usage
sub="$1"
shift
case "$sub" in
  up) cmd_up "$@" ;;
  down) cmd_down "$@" ;;
  status) cmd_status "$@" ;;
  apiserver-stop) cmd_apiserver_stop "$@" ;;
  apiserver-start) cmd_apiserver_start "$@" ;;
  etcd-pause) signal_etcd "${1:-}" STOP ;;
  etcd-resume) signal_etcd "${1:-}" CONT ;;
  __watchdog) cmd_watchdog "$@" ;;
  -h | --help | help) usage ;;
  *) usage ;;
esac
