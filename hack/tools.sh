#!/usr/bin/env bash
# tools.sh builds the pinned test tools into a versioned cache outside the checkout,
# so that every clone on this machine reuses them. It builds only what is missing and
# prints what it built and how long that took.
#
#   hack/tools.sh            build what is missing (all of the below)
#   hack/tools.sh gen        only the code generators (controller-gen, client-gen, ...)
#   hack/tools.sh node       only the real node's: kubelet, kube-controller-manager,
#                            kube-scheduler, kube-proxy, containerd, and the Debian
#                            packages runc, CNI plugins, iptables and conntrack
#   hack/tools.sh --print    print the tool directory (the envtest binary assets dir)
set -euo pipefail

K8S_VERSION=v1.37.2
HELM_VERSION=v3.22.0
GOLANGCI_LINT_VERSION=v2.15.0
CONTROLLER_TOOLS_VERSION=v0.23.0
CODE_GENERATOR_VERSION=v0.37.2
CONTAINERD_VERSION=v2.4.2

root=$(cd "$(dirname "$0")/.." && pwd)
cache=${SECRET_RELAY_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/secret-relay/tools}
k8s_dir=$cache/k8s-$K8S_VERSION
helm_dir=$cache/helm-$HELM_VERSION
lint_dir=$cache/golangci-lint-$GOLANGCI_LINT_VERSION
controller_gen_dir=$cache/controller-gen-$CONTROLLER_TOOLS_VERSION
codegen_dir=$cache/code-generator-$CODE_GENERATOR_VERSION
containerd_dir=$cache/containerd-$CONTAINERD_VERSION

case "${1:-}" in
--print)
	case "${2:-k8s}" in
	k8s) echo "$k8s_dir" ;;
	helm) echo "$helm_dir/helm" ;;
	golangci-lint) echo "$lint_dir/golangci-lint" ;;
	controller-gen) echo "$controller_gen_dir/controller-gen" ;;
	codegen) echo "$codegen_dir" ;;
	containerd) echo "$containerd_dir" ;;
	*) echo "unknown tool $2" >&2; exit 2 ;;
	esac
	exit 0
	;;
esac

only=${1:-all}

# timed NAME CMD... runs CMD and reports how long building NAME took.
timed() {
	local name=$1 start=$SECONDS
	shift
	echo "tools: building $name ..."
	"$@"
	echo "tools: built $name in $((SECONDS - start))s"
}

# build_k8s NAME builds test/tools/NAME, stamped with the Kubernetes version.
build_k8s() {
	local name=$1 tmp
	[ -x "$k8s_dir/$name" ] && return 0
	mkdir -p "$k8s_dir"
	tmp=$(mktemp "$k8s_dir/.$name.XXXXXX")
	# kubectl and the apiserver print gitVersion; gitMajor/Minor feed /version.
	timed "$name $K8S_VERSION" env -C "$root/test/tools" CGO_ENABLED=0 go build -trimpath -o "$tmp" \
		-ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37 -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION" \
		"./$name"
	mv "$tmp" "$k8s_dir/$name"
}

# go_install NAME DIR PKG@VERSION [GO FLAGS...] installs a Go command into DIR.
go_install() {
	local name=$1 dir=$2 pkg=$3
	shift 3
	[ -x "$dir/$name" ] && return 0
	mkdir -p "$dir"
	timed "$name" env GOBIN="$dir" CGO_ENABLED=0 go install -trimpath "$@" "$pkg"
}

# apt_install PACKAGE... installs Debian packages, as root or through sudo.
apt_install() {
	local sudo=()
	[ "$(id -u)" = 0 ] || sudo=(sudo)
	export DEBIAN_FRONTEND=noninteractive
	"${sudo[@]}" apt-get install -y --no-install-recommends "$@" >/dev/null 2>&1 ||
		{ "${sudo[@]}" apt-get update -qq && "${sudo[@]}" apt-get install -y --no-install-recommends "$@" >/dev/null; }
}

if [ "$only" = all ] || [ "$only" = k8s ]; then
	for t in etcd kube-apiserver kubectl; do build_k8s "$t"; done
fi
if [ "$only" = all ] || [ "$only" = helm ]; then
	go_install helm "$helm_dir" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
fi
if [ "$only" = all ] || [ "$only" = gen ]; then
	go_install controller-gen "$controller_gen_dir" "sigs.k8s.io/controller-tools/cmd/controller-gen@$CONTROLLER_TOOLS_VERSION"
	for g in client-gen lister-gen informer-gen; do
		go_install "$g" "$codegen_dir" "k8s.io/code-generator/cmd/$g@$CODE_GENERATOR_VERSION"
	done
fi
# The real node's tools: test/node and the suites on it.
if [ "$only" = all ] || [ "$only" = node ]; then
	for t in kubelet kube-controller-manager kube-scheduler kube-proxy; do build_k8s "$t"; done
	# Static, no cgo, without the snapshotters the node does not use; the shim also
	# without gRPC, as containerd's own release builds do.
	tags="urfave_cli_no_docs no_btrfs no_devmapper no_zfs osusergo netgo static_build"
	for t in containerd ctr; do
		go_install "$t" "$containerd_dir" "github.com/containerd/containerd/v2/cmd/$t@$CONTAINERD_VERSION" -tags "$tags"
	done
	go_install containerd-shim-runc-v2 "$containerd_dir" "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION" -tags "$tags no_grpc"
	# A fresh machine has none of these; the node needs runc to run containers, the
	# CNI plugins for pod networking, iptables for kube-proxy and conntrack for it
	# to flush stale entries.
	missing=()
	[ -x /usr/sbin/runc ] || missing+=(runc)
	[ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
	command -v iptables >/dev/null || [ -x /usr/sbin/iptables ] || missing+=(iptables)
	command -v conntrack >/dev/null || [ -x /usr/sbin/conntrack ] || missing+=(conntrack)
	if [ ${#missing[@]} -gt 0 ]; then
		timed "${missing[*]} (apt)" apt_install "${missing[@]}"
	fi
fi
if [ "$only" = golangci-lint ]; then
	go_install golangci-lint "$lint_dir" "github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$GOLANGCI_LINT_VERSION"
fi
