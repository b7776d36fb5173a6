# secret-relay: relay Secrets from an upstream cluster at pod admission.
SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
IMG ?= ghcr.io/secret-relay/secret-relay:$(VERSION)

# The control-plane binaries live in a versioned cache outside the checkout
# (hack/tools.sh); envtest finds them through KUBEBUILDER_ASSETS.
export KUBEBUILDER_ASSETS := $(shell hack/tools.sh --print k8s)
HELM := $(shell hack/tools.sh --print helm)
GOLANGCI_LINT := $(shell hack/tools.sh --print golangci-lint)

# RUN selects tests by name, as go test -run does: make test-e2e RUN=TestTestBed
RUN ?= .
TEST_TIMEOUT ?= 30m

.PHONY: all
all: build

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make \033[36m<target>\033[0m\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Development

.PHONY: build
build: ## Build bin/secret-relay, stamped with the git version.
	CGO_ENABLED=0 go build -trimpath -ldflags "$(LDFLAGS)" -o bin/secret-relay ./cmd/secret-relay

.PHONY: tools
tools: ## Build what the tests need into the tool cache, if missing: kube-apiserver, etcd, kubectl, helm, the code generators and the real node's tools.
	hack/tools.sh all

.PHONY: tools-node
tools-node: ## Only the real node's tools (kubelet, kube-controller-manager, kube-scheduler, kube-proxy, containerd) and apt-install runc, CNI plugins, iptables, conntrack.
	hack/tools.sh node

.PHONY: manifests
manifests: ## Regenerate from api/v1alpha1's markers: DeepCopy, the typed client (api/client) and the CRDs.
	hack/generate.sh

.PHONY: generate
generate: manifests ## The same as manifests.

.PHONY: test
test: tools vet ## Run the unit tests, the end-to-end suites and the demo on two local control planes.
	go test -count=1 -timeout $(TEST_TIMEOUT) ./...
	@# The demo proves it does what it prints: it asserts every step it shows.
	@SECRET_RELAY_DEMO=1 go test ./test/demo -run TestDemo -count=1 -timeout 10m

.PHONY: test-unit
test-unit: ## Run the tests that need no control plane.
	go test -count=1 $$(go list ./... | grep -v /test/)

.PHONY: test-e2e
test-e2e: tools ## Run the end-to-end suites; RUN=<regexp> picks tests.
	go test -count=1 -timeout $(TEST_TIMEOUT) -run '$(RUN)' -v ./test/...

.PHONY: vet
vet: ## Run go vet.
	go vet ./...

.PHONY: lint
lint: ## Run golangci-lint (pinned, built into the tool cache).
	hack/tools.sh golangci-lint
	$(GOLANGCI_LINT) run ./...

.PHONY: fmt
fmt: ## Format the code.
	gofmt -w $$(git ls-files '*.go')

##@ Shipping

.PHONY: demo
demo: tools ## Run the seed scenario end to end on two local control planes.
	@SECRET_RELAY_DEMO=1 KEEP=$(KEEP) go test ./test/demo -run TestDemo -count=1 -v -timeout 30m

.PHONY: demo-node
demo-node: tools ## The seed walkthrough on a real node: the Helm chart running as pods, ending with the container's own output.
	@SECRET_RELAY_DEMO=node go test ./test/demo -run TestDemoNode -count=1 -v -timeout 15m

# BENCH_OUT is where make bench writes its JSON report; the fleet's scaling curve
# goes beside it, as <report>-fleet.png.
BENCH_OUT ?= bin/bench-results.json

.PHONY: bench
bench: tools ## Run the benchmarks, each against a baseline in the same run; writes bin/bench-results.json and the fleet's curve, then bench-node.
	SECRET_RELAY_BENCH=1 BENCH_OUT=$(abspath $(BENCH_OUT)) go test ./test/bench/ -run TestBench -v -count=1 -timeout 60m
	@if grep -q '"fleet"' $(BENCH_OUT); then \
		cd test/plot && go run . $(abspath $(BENCH_OUT)) $(abspath $(basename $(BENCH_OUT))-fleet.png) && \
		echo "fleet scaling curve written to $(basename $(BENCH_OUT))-fleet.png"; fi
	@if [ -z "$(BENCH_ONLY)" ]; then $(MAKE) --no-print-directory bench-node; fi

.PHONY: bench-node
bench-node: tools ## On the real node: pod create → container running with its Secret, relayed against a Secret that exists; writes <BENCH_OUT>-node.json.
	SECRET_RELAY_BENCH=1 BENCH_NODE_OUT=$(abspath $(basename $(BENCH_OUT))-node.json) go test ./test/e2enode/ -run TestBenchNode -v -count=1 -timeout 20m

# FUZZTIME is how long each fuzz target runs: make fuzz FUZZTIME=5m
FUZZTIME ?= 1m

.PHONY: fuzz
fuzz: ## Fuzz the annotation parser, review decoding and store specs, FUZZTIME each; make test runs their committed corpora.
	go test ./webhook -run '^$$' -fuzz '^FuzzParseAnnotations$$' -fuzztime $(FUZZTIME)
	go test ./webhook -run '^$$' -fuzz '^FuzzReview$$' -fuzztime $(FUZZTIME)
	go test ./remote -run '^$$' -fuzz '^FuzzStoreSpec$$' -fuzztime $(FUZZTIME)

.PHONY: image
image: build ## Build the container image as a tarball, bin/secret-relay-image.tar, with no Docker engine.
	go run ./hack/image -binary bin/secret-relay -ref $(IMG) -out bin/secret-relay-image.tar

.PHONY: docker-build
docker-build: ## Build the container image (needs a Docker engine).
	docker build --build-arg VERSION=$(VERSION) -t $(IMG) .
