#!/usr/bin/env bash
# Runs the pinned helm (hack/versions.env) from the binary cache, building it with
# hack/bins/build.sh when it is missing; every argument is passed on. `make lint` uses it as
#   hack/helm.sh lint deploy/helm/dpctlr
# $HELM, when set, names a helm binary to use instead.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

if [ -n "${HELM:-}" ]; then
  exec "$HELM" "$@"
fi

# shellcheck source-path=SCRIPTDIR source=versions.env
. "$here/versions.env"
cache=${DPCTL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dpctl}
helm="$cache/helm/$HELM_VERSION/bin/helm"

if [ ! -x "$helm" ]; then
  echo "hack/helm.sh: $helm is missing; building it with hack/bins/build.sh" >&2
  dir=$("$here/bins/build.sh" | grep -m1 "/helm/$HELM_VERSION/bin\$" || true)
  if [ -z "$dir" ] || [ ! -x "$dir/helm" ]; then
    echo "hack/helm.sh: hack/bins/build.sh did not produce helm $HELM_VERSION" >&2
    exit 1
  fi
  helm="$dir/helm"
fi
exec "$helm" "$@"
