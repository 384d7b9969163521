#!/usr/bin/env bash
# Fills the `gpu-map` ConfigMap that the dual-pods controller reads: for each GPU Node,
# data[<node>] = JSON {"<GPU UUID>": <index>, ...}, the indices being those nvidia-smi prints
# on that Node (which is what CUDA_VISIBLE_DEVICES with CUDA_DEVICE_ORDER=PCI_BUS_ID means).
#
# Usage: hack/ensure-nodes-mapped.sh   (bash 4.4 or later)
#   Works in the current namespace of the kubeconfig (kubectl on PATH, or $KUBECTL), on a real
#   cluster and on the local one alike. A Node counts as a GPU Node when it has the label
#   nvidia.com/gpu.present=true or allocatable nvidia.com/gpu > 0. Cordoned Nodes and Nodes
#   already in gpu-map are skipped (to re-map a Node, remove its key from gpu-map first).
#   For each other Node it runs a Pod pinned to the Node (spec.nodeName) that asks for no GPU
#   but sees them all (NVIDIA_VISIBLE_DEVICES=all) and runs
#     nvidia-smi --query-gpu=index,uuid --format=csv,noheader
#   then records the output and deletes the Pod. A Node that fails is reported and skipped.
#   Exit status: 0, unless some Node needed mapping and none could be mapped (1), or usage (2).
#
# Environment:
#   GPU_MAP_IMAGE    image with nvidia-smi (default nvcr.io/nvidia/cuda:12.4.1-base-ubuntu22.04)
#   GPU_MAP_TIMEOUT  seconds to wait for the Pods, all together (default 300)
#   KUBECTL          kubectl command (default kubectl)
set -euo pipefail

readonly CONFIGMAP=gpu-map
readonly APP_LABEL=app.kubernetes.io/name=ensure-nodes-mapped
image=${GPU_MAP_IMAGE:-nvcr.io/nvidia/cuda:12.4.1-base-ubuntu22.04}
timeout_s=${GPU_MAP_TIMEOUT:-300}
kubectl=${KUBECTL:-kubectl}

log() { printf 'ensure-nodes-mapped: %s\n' "$*" >&2; }
oneline() { tr -s '\r\n' '  ' | sed 's/[[:space:]]*$//'; }

if [ "$#" -gt 0 ]; then
  case $1 in
    -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) log "takes no arguments (it uses the kubeconfig's current namespace); see --help"; exit 2 ;;
  esac
fi
if ! [[ $timeout_s =~ ^[0-9]+$ ]]; then
  log "GPU_MAP_TIMEOUT=$timeout_s is not a number of seconds"
  exit 2
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ensure-nodes-mapped.XXXXXX")
# This run's Pods carry this label value, so the trap can delete them even if a name was lost.
run_id="run-$(date +%s)-$$"

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -s "$tmp/created" ]; then
    "$kubectl" delete pod -l "$APP_LABEL,dpctl.llm-d.ai/run=$run_id" --ignore-not-found --wait=false \
      >/dev/null 2>&1 || log "could not delete the Pods labelled dpctl.llm-d.ai/run=$run_id; delete them by hand"
  fi
  rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

namespace=$("$kubectl" config view --minify -o 'jsonpath={..namespace}' 2>/dev/null || true)
namespace=${namespace:-default}

# --- which Nodes need mapping -----------------------------------------------------------------

"$kubectl" get nodes -o 'jsonpath={range .items[*]}{.metadata.name}{"|"}{.spec.unschedulable}{"|"}{.metadata.labels.nvidia\.com/gpu\.present}{"|"}{.status.allocatable.nvidia\.com/gpu}{"\n"}{end}' \
  >"$tmp/nodes"
# shellcheck disable=SC2016 # a Go template, not shell
"$kubectl" get configmap "$CONFIGMAP" --ignore-not-found \
  -o 'go-template={{range $k, $v := .data}}{{$k}}{{"\n"}}{{end}}' >"$tmp/mapped"

todo=()
while IFS='|' read -r node unschedulable present allocatable; do
  [ -n "$node" ] || continue
  gpus=false
  if [ "$present" = true ]; then gpus=true; fi
  if [[ $allocatable =~ ^[0-9]+$ ]] && [ "$allocatable" -gt 0 ]; then gpus=true; fi
  if [ "$gpus" != true ]; then
    continue
  elif [ "$unschedulable" = true ]; then
    log "skipping $node: cordoned"
  elif grep -qxF -- "$node" "$tmp/mapped"; then
    log "skipping $node: already in $CONFIGMAP"
  else
    todo+=("$node")
  fi
done <"$tmp/nodes"

if [ "${#todo[@]}" -eq 0 ]; then
  log "nothing to do in namespace $namespace: every schedulable GPU Node is in $CONFIGMAP"
  exit 0
fi
log "mapping ${#todo[@]} Node(s) in namespace $namespace with $image: ${todo[*]}"

# --- one nvidia-smi Pod per Node --------------------------------------------------------------

pod_manifest() { # node
  cat <<EOF
apiVersion: v1
kind: Pod
metadata:
  generateName: gpu-map-
  labels:
    app.kubernetes.io/name: ensure-nodes-mapped
    app.kubernetes.io/managed-by: dpctl
    dpctl.llm-d.ai/run: "$run_id"
spec:
  nodeName: "$1"
  restartPolicy: Never
  automountServiceAccountToken: false
  # GPU Nodes are often tainted; this Pod must run there anyway, briefly.
  tolerations:
    - operator: Exists
  containers:
    - name: nvidia-smi
      image: "$image"
      imagePullPolicy: IfNotPresent
      command: ["nvidia-smi", "--query-gpu=index,uuid", "--format=csv,noheader"]
      env:
        # No GPU is requested (they may all be in use); the NVIDIA runtime still shows them all.
        - name: NVIDIA_VISIBLE_DEVICES
          value: all
      securityContext:
        allowPrivilegeEscalation: false
        capabilities:
          drop: ["ALL"]
        seccompProfile:
          type: RuntimeDefault
EOF
}

declare -A node_of=() # pod -> node
failed=()
: >"$tmp/created"
for node in "${todo[@]}"; do
  if pod=$(pod_manifest "$node" | "$kubectl" create -f - -o 'jsonpath={.metadata.name}' 2>"$tmp/err"); then
    echo "$pod" >>"$tmp/created"
    node_of[$pod]=$node
  else
    log "$node: cannot create the nvidia-smi Pod: $(oneline <"$tmp/err")"
    failed+=("$node")
  fi
done

# "0, GPU-abc" lines -> {"GPU-abc": 0, ...}; anything else is reported on stderr.
to_json() {
  awk -F',' '
    { sub(/\r$/, ""); idx = $1; uuid = $2
      gsub(/^[ \t]+|[ \t]+$/, "", idx); gsub(/^[ \t]+|[ \t]+$/, "", uuid) }
    NF == 2 && idx ~ /^[0-9]+$/ && uuid ~ /^GPU-[A-Za-z0-9-]+$/ && !(uuid in seen) {
      seen[uuid] = 1; printf "%s\"%s\": %d", (n++ ? ", " : "{"), uuid, idx; next }
    /[^ \t]/ { print "ignored line: " $0 > "/dev/stderr" }
    END { if (n) print "}" }'
}

write_entry() { # node json
  local node=$1 json=$2 patch
  patch=$(printf '{"data":{"%s":"%s"}}' "$node" "${json//\"/\\\"}")
  if "$kubectl" patch configmap "$CONFIGMAP" --type=merge -p "$patch" >/dev/null 2>"$tmp/err"; then
    return 0
  fi
  if grep -q NotFound "$tmp/err"; then
    if "$kubectl" create configmap "$CONFIGMAP" --from-literal="$node=$json" >/dev/null 2>"$tmp/err"; then
      return 0
    fi
    # Created meanwhile by someone else: patch that one.
    if grep -q AlreadyExists "$tmp/err" &&
      "$kubectl" patch configmap "$CONFIGMAP" --type=merge -p "$patch" >/dev/null 2>"$tmp/err"; then
      return 0
    fi
  fi
  log "$node: cannot write $CONFIGMAP: $(oneline <"$tmp/err")"
  return 1
}

finish_pod() { # pod ok|fail reason
  local pod=$1 node=${node_of[$1]} outcome=$2 reason=${3:-} json line tail
  if [ "$outcome" = ok ] && "$kubectl" logs "$pod" >"$tmp/out" 2>"$tmp/err"; then
    json=$(to_json <"$tmp/out" 2>"$tmp/ignored")
    while IFS= read -r line; do log "$node: $line"; done <"$tmp/ignored"
    if [ -z "$json" ]; then
      log "$node: nvidia-smi listed no GPUs"
      failed+=("$node")
    elif write_entry "$node" "$json"; then
      log "$node: $json"
      mapped+=("$node")
    else
      failed+=("$node")
    fi
  else
    if [ "$outcome" = ok ]; then reason="cannot read its log: $(oneline <"$tmp/err")"; fi
    tail=$("$kubectl" logs "$pod" --tail=5 2>/dev/null | oneline || true)
    log "$node: Pod $pod $reason${tail:+; its log: $tail}"
    failed+=("$node")
  fi
  "$kubectl" delete pod "$pod" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  unset "node_of[$pod]"
}

mapped=()
deadline=$((SECONDS + timeout_s))
declare -A why=() # pod -> last reason it is still waiting
while [ "${#node_of[@]}" -gt 0 ]; do
  for pod in "${!node_of[@]}"; do
    status=$("$kubectl" get pod "$pod" \
      -o 'jsonpath={.status.phase}{"|"}{.status.containerStatuses[0].state.waiting.reason}{"|"}{.status.containerStatuses[0].state.waiting.message}' \
      2>/dev/null) || status="Unknown||cannot read its status"
    IFS='|' read -r phase reason message <<<"$status"
    case $phase in
      Succeeded) finish_pod "$pod" ok ;;
      Failed) finish_pod "$pod" fail "failed" ;;
      *)
        case $reason in
          InvalidImageName | ErrImageNeverPull | CreateContainerConfigError | CreateContainerError)
            finish_pod "$pod" fail "cannot start: $reason: $message" ;;
          *) why[$pod]="${phase:-Pending}${reason:+ ($reason${message:+: $message})}" ;;
        esac
        ;;
    esac
  done
  [ "${#node_of[@]}" -gt 0 ] || break
  if [ "$SECONDS" -ge "$deadline" ]; then
    for pod in "${!node_of[@]}"; do
      finish_pod "$pod" fail "did not finish within ${timeout_s}s: ${why[$pod]:-Pending}"
    done
    break
  fi
  sleep 1
done

log "mapped ${#mapped[@]} of ${#todo[@]} Node(s)${failed[*]:+; failed: ${failed[*]}}"
if [ "${#mapped[@]}" -eq 0 ]; then
  exit 1
fi
