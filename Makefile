# dpctl — one Makefile for set-up, the local cluster, tests, images and benchmarks.
# `make help` lists the targets.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DPCTL := $(BIN)/dpctl
NODES ?= 2
GPUS ?= 4
NAMESPACE ?= default
CONTAINER_IMG_REG ?= registry.local/dpctl
TARGETARCH ?=
IMG_TAG ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo dev)
SLEEPER_LIMIT ?= 2
DEMO ?= direct
DURATION ?= 180
PYTEST_ARGS ?=

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

# dpctl and the simulator (sim/, distribution dpctl-sim) in one pip command, so that
# dpctl-sim's `dpctl` requirement is this checkout (PyPI's project called dpctl is unrelated).
$(DPCTL): pyproject.toml sim/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]' -e ./sim
	@touch $(DPCTL)

.PHONY: dev
dev: $(DPCTL) ## create .venv with dpctl and the simulator dpctl-sim (both editable) and the dev tools

.PHONY: bins
bins: ## build kube-apiserver, kcm, scheduler, kubectl, etcd, helm, prometheus, promtool into ~/.cache/dpctl (no-op when built)
	hack/bins/build.sh >/dev/null

.PHONY: image-tools
image-tools: ## podman, buildah, a test-only Python base image, a registry and crane for the image tests (no-op when there)
	hack/images/setup.sh >/dev/null

.PHONY: cluster-up
cluster-up: dev bins ## start the embedded local cluster (NODES=2 GPUS=4); prints `export KUBECONFIG=...`
	@$(DPCTL) local-cluster up --nodes $(NODES) --gpus $(GPUS)

.PHONY: cluster-down
cluster-down: dev ## stop the embedded local cluster
	@$(DPCTL) local-cluster down

.PHONY: run
run: cluster-up ## local cluster + the controller (chart) + gpu-map + a demo: DEMO=direct (server-patch ReplicaSet) or DEMO=launcher (docs/launcher-recipe.md)
	@DEMO=$(DEMO) SLEEPER_LIMIT=$(SLEEPER_LIMIT) hack/run-demo.sh

.PHONY: crds
crds: cluster-up ## regenerate the chart's CRDs from dpctl/fma/v1alpha1.py and the local API server's OpenAPI
	@eval "$$($(DPCTL) local-cluster env)" && kubectl get --raw /openapi/v3/api/v1 | \
	  $(BIN)/python -m dpctl.fma.crdgen deploy/helm/dpctlr/crds

.PHONY: lint
lint: dev ## ruff, mypy --strict (dpctl, dpsim, test, bench), import contracts (pyproject's [tool.importlinter]), helm lint, alert rules (promtool)
	$(BIN)/ruff check dpctl sim test hack bench
	$(BIN)/ruff format --check dpctl sim test hack bench
	$(BIN)/mypy
	$(BIN)/lint-imports
	hack/helm.sh lint deploy/helm/dpctlr
	@# promtool is built (minutes, once per version) when the cache lacks it: never skipped.
	promtool=$$(hack/bins/build.sh prometheus)/promtool && \
	  $$promtool check rules deploy/helm/dpctlr/files/alerts.yaml && \
	  (cd test/unit/deploy && $$promtool test rules alerts_test.yaml)

.PHONY: unit
unit: dev ## unit tests (no cluster)
	$(BIN)/pytest test/unit -q $(PYTEST_ARGS)

.PHONY: e2e
e2e: dev bins image-tools ## end-to-end tests: on the local cluster, or on the cluster of KUBECONFIG when set
	$(BIN)/pytest test/e2e -q $(PYTEST_ARGS)

.PHONY: test
test: lint unit e2e ## everything CI runs: lint, unit and end-to-end tests (brings up its own cluster)

.PHONY: soak
soak: dev bins ## fault-injection soak (DURATION seconds) on a fresh local cluster
	$(BIN)/pytest test/e2e/soak -q -m slow --soak-duration=$(DURATION) $(PYTEST_ARGS)

.PHONY: bench
bench: dev bins ## actuation latency and scale benchmarks; prints a one-line JSON summary last
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# Images: podman or docker, whichever is installed (podman first). ENGINE=... picks one.
ifeq ($(origin ENGINE),undefined)
ENGINE := $(shell command -v podman 2>/dev/null || command -v docker 2>/dev/null)
endif
PLATFORM := $(if $(TARGETARCH),--platform linux/$(TARGETARCH),)
REQUESTER_IMG := $(CONTAINER_IMG_REG)/requester:latest
# PYTHON_IMAGE=...: another base for both images than the Containerfile's python:3.11-slim (the
# image tests pass hack/images/setup.sh's test-only base, built where no public registry is reachable).
PYTHON_IMAGE ?=
BUILD_ARGS := $(if $(PYTHON_IMAGE),--build-arg PYTHON_IMAGE=$(PYTHON_IMAGE),)
CONTROLLER_IMG := $(CONTAINER_IMG_REG)/dual-pods-controller:$(IMG_TAG)

.PHONY: check-engine
check-engine:
	@if [ -z "$(ENGINE)" ]; then \
	  echo "No container engine: install podman or docker to build images (or set ENGINE=...)." >&2; exit 1; fi
	@if ! command -v $(ENGINE) >/dev/null; then echo "ENGINE=$(ENGINE) is not a command." >&2; exit 1; fi
	@if ! $(ENGINE) info >/dev/null 2>&1; then \
	  echo "$(ENGINE) is installed but cannot build here (is its daemon or socket running?); try: $(ENGINE) info" >&2; exit 1; fi

.PHONY: build-requester
build-requester: check-engine ## build $(CONTAINER_IMG_REG)/requester:latest (TARGETARCH=amd64|arm64 to cross-build)
	$(ENGINE) build $(PLATFORM) $(BUILD_ARGS) -f Containerfile --target requester -t $(REQUESTER_IMG) .

.PHONY: push-requester
push-requester: check-engine ## push $(CONTAINER_IMG_REG)/requester:latest
	$(ENGINE) push $(REQUESTER_IMG)

LAUNCHER_IMG := $(CONTAINER_IMG_REG)/launcher:$(IMG_TAG)
# VLLM_IMAGE=...: another vLLM base for the launcher image than the Containerfile's.
VLLM_IMAGE ?=
LAUNCHER_BUILD_ARGS := $(BUILD_ARGS) $(if $(VLLM_IMAGE),--build-arg VLLM_IMAGE=$(VLLM_IMAGE),)

.PHONY: build-launcher
build-launcher: check-engine ## build $(CONTAINER_IMG_REG)/launcher:$(IMG_TAG) (vLLM's image + dpctl launcher; VLLM_IMAGE=... for another base)
	$(ENGINE) build $(PLATFORM) $(LAUNCHER_BUILD_ARGS) -f Containerfile --target launcher -t $(LAUNCHER_IMG) .

.PHONY: build-controller
build-controller: check-engine ## build and push $(CONTAINER_IMG_REG)/dual-pods-controller:$(IMG_TAG); prints the reference last
	$(ENGINE) build $(PLATFORM) $(BUILD_ARGS) -f Containerfile --target controller -t $(CONTROLLER_IMG) .
	$(ENGINE) push $(CONTROLLER_IMG)
	@echo $(CONTROLLER_IMG)

.PHONY: clean
clean: ## remove build outputs (not the binary cache)
	rm -rf dist build .mypy_cache .ruff_cache .pytest_cache
