#!/usr/bin/env bash
# generate.sh writes everything generated from api/v1alpha1's kubebuilder markers:
# the DeepCopy methods, the typed clientset, listers and informers under api/client,
# and the CRDs in manifests/crds (and their copy in the chart). The generators are
# pinned in hack/tools.sh.
#
#   hack/generate.sh         regenerate in place (make manifests)
#   hack/generate.sh DIR     write the same files under DIR instead, to compare
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
hack/tools.sh gen >&2
controller_gen=$(hack/tools.sh --print controller-gen)
codegen=$(hack/tools.sh --print codegen)
out=${1:-$root}
module=github.com/secret-relay/secret-relay
header=hack/boilerplate.go.txt

mkdir -p "$out/api/v1alpha1" "$out/manifests/crds"
"$controller_gen" object:headerFile="$header" paths=./api/v1alpha1 output:object:dir="$out/api/v1alpha1"
"$controller_gen" crd paths=./api/v1alpha1 output:crd:artifacts:config="$out/manifests/crds"

rm -rf "$out/api/client"
"$codegen/client-gen" --clientset-name versioned --input-base "$module" --input api/v1alpha1 \
	--output-dir "$out/api/client/clientset" --output-pkg "$module/api/client/clientset" --go-header-file "$header"
"$codegen/lister-gen" --output-dir "$out/api/client/listers" --output-pkg "$module/api/client/listers" \
	--go-header-file "$header" "$module/api/v1alpha1"
"$codegen/informer-gen" --versioned-clientset-package "$module/api/client/clientset/versioned" \
	--listers-package "$module/api/client/listers" --output-dir "$out/api/client/informers" \
	--output-pkg "$module/api/client/informers" --go-header-file "$header" "$module/api/v1alpha1"

# Helm installs CRDs from the chart's crds/, which must match manifests/crds.
mkdir -p "$out/manifests/charts/secret-relay/crds"
cp "$out"/manifests/crds/*.yaml "$out/manifests/charts/secret-relay/crds/"
