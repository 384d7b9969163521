#!/usr/bin/env bash
# Sets up what the image tests need on this machine, idempotently (a warm run only checks):
#   - podman, buildah, skopeo, runc, mmdebstrap from Debian's packages, when missing (as root);
#   - containers.conf and registries.conf in the cache, named by CONTAINERS_CONF and
#     CONTAINERS_REGISTRIES_CONF for every podman call of the tests (nothing in /etc changes);
#   - a Python 3.11 base image built from Debian's packages, $TEST_BASE_IMAGE, for
#     `make build-* PYTHON_IMAGE=...` where no public registry is reachable: TEST-ONLY (it carries
#     this machine's CA bundle and no PEP 668 marker), never to be pushed;
#   - the distribution registry and crane (go install), cached by version.
# Prints the settings the tests use, one KEY=VALUE a line; logs go to stderr.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../versions.env
. "$here/../versions.env"
cache=${DPCTL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dpctl}
export GOTOOLCHAIN=local CGO_ENABLED=0
# The test base's name says what it is: nothing of ours ever pushes a localhost/dpctl-test-base image.
TEST_BASE_IMAGE=localhost/dpctl-test-base/python:3.11
PACKAGES=(podman buildah skopeo runc mmdebstrap)
# Apt and go install talk to package registries: bounded, and apt retries by itself.
APT_TIMEOUT_S=600
GO_TIMEOUT_S=900

log() { echo "hack/images: $*" >&2; }

install_packages() {
  local missing=() p
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    log "missing ${missing[*]}: install them (Debian: apt-get install ${missing[*]}) and run again"
    exit 1
  fi
  log "installing ${missing[*]}"
  timeout "$APT_TIMEOUT_S" apt-get update -qq -o Acquire::Retries=3 >&2
  DEBIAN_FRONTEND=noninteractive timeout "$APT_TIMEOUT_S" \
    apt-get install -y -qq -o Acquire::Retries=3 --no-install-recommends "${PACKAGES[@]}" >&2
}

write_if_changed() { # path; content on stdin
  local tmp
  tmp=$(mktemp)
  cat >"$tmp"
  if cmp -s "$tmp" "$1"; then rm -f "$tmp"; else mv "$tmp" "$1"; chmod 0644 "$1"; fi
}

write_configs() {
  conf_dir="$cache/containers"
  mkdir -p "$conf_dir"
  write_if_changed "$conf_dir/containers.conf" <<'CONF'
# Written by hack/images/setup.sh; CONTAINERS_CONF names it for the image tests' podman calls.
[containers]
# podman's defaults (nofile 1048576) exceed this machine's hard limits, and runc then fails
# with "setrlimit RLIMIT_NOFILE: Operation not permitted"; these stay within them.
default_ulimits = ["nofile=20000:20000", "nproc=8192:8192"]

[engine]
# crun refuses this machine's hybrid (v1 + unified) cgroup layout; runc runs on it.
runtime = "runc"
CONF
  # A registry on 127.0.0.1 serves plain HTTP. containers/image matches "127.0.0.1" as a prefix
  # of "127.0.0.1:<port>" too, so this one entry covers the free port each test picks; the image
  # test's push fails loudly should that matching ever change.
  write_if_changed "$conf_dir/registries.conf" <<'CONF'
# Written by hack/images/setup.sh; CONTAINERS_REGISTRIES_CONF names it for the image tests.
# No unqualified-search registries: every image the tests use is fully qualified.
unqualified-search-registries = []

[[registry]]
location = "127.0.0.1"
insecure = true
CONF
  export CONTAINERS_CONF="$conf_dir/containers.conf" CONTAINERS_REGISTRIES_CONF="$conf_dir/registries.conf"
}

build_base() {
  if podman image exists "$TEST_BASE_IMAGE"; then return; fi
  log "building $TEST_BASE_IMAGE from Debian $TEST_BASE_SUITE (test-only, never pushed)"
  local work mirror
  work=$(mktemp -d)
  # shellcheck disable=SC2064
  trap "rm -rf '$work'" RETURN
  mirror=$(sed -n 's/^URIs: *\(http[^ ]*\/debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
  # python3-venv brings ensurepip, hence pip: the Containerfile runs `pip wheel` and `pip install`.
  # Sources are given explicitly: mmdebstrap reads them from stdin when it is not a terminal.
  timeout "$APT_TIMEOUT_S" mmdebstrap --quiet --variant=minbase \
    --include=python3,python3-venv,python3-pip,ca-certificates \
    "$TEST_BASE_SUITE" "$work/rootfs.tar" "${mirror:-http://deb.debian.org/debian}" </dev/null >&2
  local ctr
  ctr=$(buildah from --quiet scratch)
  buildah add --quiet "$ctr" "$work/rootfs.tar" / >/dev/null
  # This machine's CA bundle (it trusts the package index's TLS), the names the Containerfile
  # calls (python, pip), and no EXTERNALLY-MANAGED marker, so pip installs as in python:3.11-slim.
  buildah copy --quiet "$ctr" /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt >/dev/null
  buildah run "$ctr" -- sh -c 'rm -f /usr/lib/python3*/EXTERNALLY-MANAGED \
    && ln -sf /usr/bin/python3 /usr/local/bin/python && ln -sf /usr/bin/pip3 /usr/local/bin/pip \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*'
  buildah config --env PATH=/usr/local/bin:/usr/bin:/bin --env LANG=C.UTF-8 \
    --label dpctl.test-only=true --cmd python3 "$ctr"
  buildah commit --quiet --rm "$ctr" "$TEST_BASE_IMAGE" >/dev/null
}

go_tool() { # name module version
  local out="$cache/$1/$3/bin"
  if [ ! -x "$out/$1" ]; then
    log "go install $2@$3 into $out"
    mkdir -p "$out.tmp"
    GOBIN="$out.tmp" timeout "$GO_TIMEOUT_S" go install -trimpath -ldflags "-s -w" "$2@$3"
    rm -rf "$out" && mv "$out.tmp" "$out"
  fi
  echo "$out/$1"
}

install_packages
write_configs
build_base
registry=$(go_tool registry github.com/distribution/distribution/v3/cmd/registry "$REGISTRY_VERSION")
crane=$(go_tool crane github.com/google/go-containerregistry/cmd/crane "$CRANE_VERSION")
echo "CONTAINERS_CONF=$CONTAINERS_CONF"
echo "CONTAINERS_REGISTRIES_CONF=$CONTAINERS_REGISTRIES_CONF"
echo "PYTHON_IMAGE=$TEST_BASE_IMAGE"
echo "REGISTRY=$registry"
echo "CRANE=$crane"
