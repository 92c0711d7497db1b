#!/usr/bin/env bash
# bench/idle.sh INGRESS SIDECAR CONTROLLER — idle VmRSS (KiB) of two data-plane binaries, to
# compare builds: weir-ingress with --config-dir (one route, one worker, access log off, as
# bench/run.sh starts it) and weir-sidecar in explicit mode under STRICT, connected to
# CONTROLLER (as bench/mesh.sh starts it), each read from /proc 5 s after it is ready.
#   bench/idle.sh target/release/weir-ingress target/release/weir-sidecar target/release/weir-controller
set -euo pipefail
ingress=$1 sidecar=$2 controller=$3
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/bench/lib.sh"
work=$(mktemp -d /tmp/weir-idle.XXXX)
mkdir -p "$work/ingress" "$work/mesh" "$work/state"
catch_all_objects > "$work/ingress/bench.yaml"
{ pod bench client 29106; pod bench backend 29206; printf 'apiVersion: weir.dev/v1alpha1\nkind: MeshTLSPolicy\nmetadata: {name: default, namespace: bench}\nspec: {mode: STRICT}\n'; } > "$work/mesh/mesh.yaml"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"' EXIT
ready() { for _ in $(seq 200); do curl -fs "$1" >/dev/null 2>&1 && return; sleep 0.1; done; echo "not ready: $1" >&2; exit 1; }
rss() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

"$ingress" --config-dir "$work/ingress" --listen 127.0.0.1:29085 --admin 127.0.0.1:29905 \
  --workers 1 --access-log off > "$work/ingress.log" 2>&1 & ipid=$!; pids+=($ipid)
ready http://127.0.0.1:29905/readyz

"$controller" run --config-dir "$work/mesh" --state-dir "$work/state" \
  --grpc 127.0.0.1:29010 --admin 127.0.0.1:29014 2>"$work/controller.log" & pids+=($!)
ready http://127.0.0.1:29014/readyz
"$controller" token --state-dir "$work/state" --namespace bench --service-account client > "$work/client.token"
"$sidecar" run --controller https://127.0.0.1:29010 \
  --controller-ca "$work/state/trust-bundle.pem" --identity-token-file "$work/client.token" \
  --namespace bench --pod client-0 --service-account client --app-port 18080 \
  --inbound 127.0.0.1:29106 --outbound 127.0.0.1:29101 --admin 127.0.0.1:29120 2>"$work/sidecar.log" & spid=$!; pids+=($spid)
ready http://127.0.0.1:29120/readyz
sleep 5
echo "ingress_rss_kib=$(rss $ipid) sidecar_rss_kib=$(rss $spid)"
