#!/usr/bin/env bash
# scripts/conformance-kind.sh — the upstream Gateway API conformance suite against Weir, on a
# kind cluster, for users' CI (docs/conformance.md). Needs docker, kind, kubectl, go and
# internet access (the Gateway API CRDs and the suite come from GitHub, kind's node image from
# a registry). It cannot run on the machines this project is built on: they reach no container
# registry and run no Kubernetes.
#
#   scripts/conformance-kind.sh                 Gateway API v1.5.0, the GATEWAY-HTTP profile
#   GATEWAY_API_VERSION=v1.5.0 PROFILES=GATEWAY-HTTP KEEP_CLUSTER=1 scripts/conformance-kind.sh
#
# Steps: a kind cluster `weir-conformance`; the standard-channel CRDs; Weir's images built
# from this checkout (scripts/image.sh) and loaded into the cluster; the manifests applied with
# those images; then the suite from the gateway-api repository at that version, with
# `--gateway-class=weir` (the suite reads the supported features from the GatewayClass's
# status) and its report written to target/conformance-report.yaml. Each Gateway gets a
# deployment and a LoadBalancer Service of its own, and the suite sends its requests to the
# Service's address: kind's LoadBalancer addresses come from cloud-provider-kind, which the
# script runs (installed with `go install sigs.k8s.io/cloud-provider-kind@latest` when
# missing; it needs root or the docker group).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
version=${GATEWAY_API_VERSION:-v1.5.0}
profiles=${PROFILES:-GATEWAY-HTTP}
cluster=weir-conformance
for tool in docker kind kubectl go git; do
  command -v "$tool" >/dev/null || { echo "scripts/conformance-kind.sh: $tool is needed" >&2; exit 1; }
done
work=$(mktemp -d)
cleanup() {
  rm -rf "$work"
  [ -z "${lb_pid:-}" ] || kill "$lb_pid" 2>/dev/null || true
  [ -n "${KEEP_CLUSTER:-}" ] || kind delete cluster --name "$cluster" >/dev/null 2>&1 || true
}
trap cleanup EXIT

mkdir -p "$root/target"
echo "==> kind cluster $cluster"
kind create cluster --name "$cluster" --wait 120s
echo "==> LoadBalancer addresses (cloud-provider-kind)"
command -v cloud-provider-kind >/dev/null || go install sigs.k8s.io/cloud-provider-kind@latest
"$(command -v cloud-provider-kind || echo "$(go env GOPATH)/bin/cloud-provider-kind")" \
  >"$root/target/cloud-provider-kind.log" 2>&1 &
lb_pid=$!
echo "==> Gateway API $version CRDs (standard channel)"
kubectl apply --server-side -f \
  "https://github.com/kubernetes-sigs/gateway-api/releases/download/$version/standard-install.yaml"

echo "==> Weir's images from this checkout"
WEIR_IMAGE_ENGINE=docker "$root/scripts/image.sh" --tag weir.local/weir:conformance
kind load docker-image --name "$cluster" weir.local/weir:conformance weir.local/weir-sidecar:conformance

echo "==> Weir's manifests, with those images"
cp -r "$root/manifests" "$work/manifests"
cat >> "$work/manifests/kustomization.yaml" <<YAML
images:
- name: ghcr.io/weir-dev/weir
  newName: weir.local/weir
  newTag: conformance
YAML
sed -i 's|ghcr.io/weir-dev/weir-sidecar:[^ ]*|weir.local/weir-sidecar:conformance|' \
  "$work/manifests/injector.yaml"
kubectl apply --server-side -k "$work/manifests"
kubectl -n weir-system rollout status deploy/weir-controller deploy/weir-ingress --timeout=300s
kubectl wait --for=condition=Accepted gatewayclass/weir --timeout=120s
echo "    supported features: $(kubectl get gatewayclass weir -o jsonpath='{.status.supportedFeatures[*].name}')"

echo "==> the conformance suite ($profiles)"
git clone --depth 1 --branch "$version" https://github.com/kubernetes-sigs/gateway-api "$work/gateway-api"
mkdir -p "$root/target"
(cd "$work/gateway-api" && go test ./conformance -run TestConformance -timeout 60m -args \
  --gateway-class=weir \
  --conformance-profiles="$profiles" \
  --organization=weir-dev --project=weir --url=https://github.com/weir-dev/weir \
  --version="$(git -C "$root" describe --always --dirty)" \
  --report-output="$root/target/conformance-report.yaml") || status=$?
echo "==> report: target/conformance-report.yaml"
exit "${status:-0}"
