#!/usr/bin/env bash
# `make run` after `make cluster-up`: on the local cluster, install the controller with its Helm
# chart, fill gpu-map, and create a demo:
#   DEMO=direct    (the default) one ReplicaSet like the e2e recipe's simple `mkrs` (server-patch)
#   DEMO=launcher  the launcher path: deploy/examples/launcher's LauncherConfig,
#                  InferenceServerConfig and requester ReplicaSet (docs/launcher-recipe.md)
#
# Environment:
#   DEMO               direct or launcher (default direct)
#   DPCTL_CLUSTER_DIR  the local cluster's state dir (default ~/.cache/dpctl/clusters/default);
#                      its env.sh (written by `dpctl local-cluster up`) sets KUBECONFIG and PATH
#   SLEEPER_LIMIT      the chart's SleeperLimit (default 2)
#   NAMESPACE          namespace to use (default: the kubeconfig's current one); when given, it is
#                      created if missing and made the kubeconfig's current namespace
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

log() { printf 'run-demo: %s\n' "$*" >&2; }

cluster_dir=${DPCTL_CLUSTER_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/dpctl/clusters/default}
if [ ! -r "$cluster_dir/env.sh" ]; then
  log "no local cluster at $cluster_dir (no env.sh); run \`make cluster-up\` first"
  exit 1
fi
# shellcheck disable=SC1091 # written by `dpctl local-cluster up`
. "$cluster_dir/env.sh"
demo=${DEMO:-direct}
case "$demo" in
  direct | launcher) ;;
  *)
    log "DEMO=$demo: expected direct or launcher"
    exit 2
    ;;
esac
examples=deploy/examples/launcher
sleeper_limit=${SLEEPER_LIMIT:-2}
release=dpctlr
node_viewer=dpctl-node-viewer
controller_image=registry.local/dpctl/dual-pods-controller:dev
requester_image=registry.local/dpctl/requester:latest

if [ -n "${NAMESPACE:-}" ]; then
  if ! kubectl get namespace "$NAMESPACE" >/dev/null 2>&1; then
    kubectl create namespace "$NAMESPACE" >/dev/null
  fi
  kubectl config set-context --current --namespace="$NAMESPACE" >/dev/null
fi
namespace=$(kubectl config view --minify -o 'jsonpath={..namespace}')
namespace=${namespace:-default}
log "cluster $KUBECONFIG, namespace $namespace"

# The recipe's NodeViewClusterRole (the local cluster usually has it already).
if ! kubectl get clusterrole "$node_viewer" >/dev/null 2>&1; then
  kubectl create clusterrole "$node_viewer" --verb=get,list,watch --resource=nodes >/dev/null
  log "created ClusterRole $node_viewer"
fi

hack/ensure-nodes-mapped.sh

log "installing the controller (release $release, SleeperLimit $sleeper_limit)"
hack/helm.sh upgrade --install "$release" deploy/helm/dpctlr --namespace "$namespace" \
  --set Image="$controller_image" \
  --set NodeViewClusterRole="$node_viewer" \
  --set SleeperLimit="$sleeper_limit" \
  --wait --timeout 3m >/dev/null
log "controller Ready: kubectl logs deploy/$release"

demo_node=$(kubectl get nodes -o jsonpath='{.items[0].metadata.name}')

if [ "$demo" = launcher ]; then
  # The chart installs the fma.llm-d.ai CRDs; wait until the API server serves them.
  kubectl wait --for=condition=Established --timeout=60s \
    crd/launcherconfigs.fma.llm-d.ai crd/inferenceserverconfigs.fma.llm-d.ai >/dev/null
  kubectl apply -f "$examples/launcher-rbac.yaml" -f "$examples/lc.yaml" -f "$examples/isc.yaml"
  # The example pins its requesters to node-1; pin them to this cluster's first Node.
  sed "s|kubernetes.io/hostname: node-1|kubernetes.io/hostname: $demo_node|" "$examples/requester-rs.yaml" |
    kubectl apply -f -
  cat <<EOT

Launcher demo created in namespace $namespace: LauncherConfig vllm-launcher, InferenceServerConfig
granite-2b and ReplicaSet granite-2b (pinned to $demo_node). To follow it (docs/launcher-recipe.md):

  . $cluster_dir/env.sh
  kubectl get pods -L dual-pods.llm-d.ai/dual,dual-pods.llm-d.ai/instance,dual-pods.llm-d.ai/sleeping
  .venv/bin/dpctl status                          # launchers, their instances, awake or asleep
  kubectl logs deploy/$release                     # -f to follow

Scale it to 0 and back to see the instance put to sleep and woken in the same launcher:

  kubectl scale rs/granite-2b --replicas=0
  kubectl scale rs/granite-2b --replicas=1
EOT
  exit 0
fi

# The recipe's simple mkrs, with two local changes in the server patch: the vLLM emulator stands
# in for `vllm serve` and starts in VLLM_EMULATOR_STARTUP_DELAY=5 s, so the readiness probe
# starts after 2 s instead of the recipe's 60 s (which only a real model load needs).
# The requester is pinned to one Node, so that scaling to 0 and back lands the new requester
# where its sleeper waits (on another Node it would get a new runner instead).
stamp=$(date +%H-%M-%S)
kubectl apply -f - <<EOF
apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: my-request-$stamp
  labels:
    app: dp-example
spec:
  replicas: 1
  selector:
    matchLabels:
      app: dp-example
  template:
    metadata:
      labels:
        app: dp-example
        instance: "$stamp"
      annotations:
        dual-pod.llm-d.ai/admin-port: "8081"
        dual-pod.llm-d.ai/server-patch: |
          metadata:
            labels: {
              "model-reg": "ibm-granite",
              "model-repo": "granite-3.3-2b-instruct",
              "app": null}
          spec:
            containers:
            - name: inference-server
              image: docker.io/vllm/vllm-openai:v0.10.2
              command:
              - vllm
              - serve
              - --port=8000
              - --model=ibm-granite/granite-3.3-2b-instruct
              - --enable-sleep-mode
              - --max-model-len=32768
              - --gpu-memory-utilization=0.8
              env:
              - name: VLLM_SERVER_DEV_MODE
                value: "1"
              - name: VLLM_CACHE_ROOT
                value: /tmp
              - name: FLASHINFER_WORKSPACE_BASE
                value: /tmp
              - name: XDG_CONFIG_HOME
                value: /tmp
              - name: XDG_CACHE_HOME
                value: /tmp
              - name: TRITON_HOME
                value: /tmp
              - name: VLLM_EMULATOR_STARTUP_DELAY
                value: "5"
              resources:
                limits:
                  cpu: "2"
                  memory: 9Gi
              readinessProbe:
                httpGet:
                  path: /health
                  port: 8000
                initialDelaySeconds: 2
                periodSeconds: 5
    spec:
      nodeSelector:
        kubernetes.io/hostname: "$demo_node"
      containers:
        - name: inference-server
          image: $requester_image
          imagePullPolicy: Always
          ports:
          - name: probes
            containerPort: 8080
          - name: spi
            containerPort: 8081
          readinessProbe:
            httpGet:
              path: /ready
              port: 8080
            initialDelaySeconds: 2
            periodSeconds: 5
          resources:
            limits:
              nvidia.com/gpu: "1"
              cpu: "1"
              memory: 250Mi
EOF

cat <<EOF

Demo ReplicaSet my-request-$stamp created in namespace $namespace. To follow it:

  . $cluster_dir/env.sh
  kubectl get pods -L dual-pods.llm-d.ai/dual,dual-pods.llm-d.ai/sleeping     # -w to follow
  kubectl logs deploy/$release                                             # -f to follow

Scale it to 0 and back to see the runner put to sleep and woken:

  kubectl scale rs/my-request-$stamp --replicas=0
  kubectl scale rs/my-request-$stamp --replicas=1
EOF
