#!/usr/bin/env bash
# bench/controller.sh — the control plane under load, in one run:
#  1. object change → served by a weir-ingress connected to the controller, 100 changes, while
#     wrk keeps a steady load on another route (every request must succeed);
#  2. 1,000 simulated ingress nodes (one process, 1,000 TLS connections and streams): object
#     change → the last node's ACK, with the small config and with 10,000 routes and 10,000
#     endpoints, and the controller's memory with them;
#  1b. the same with the controller in Kubernetes mode (--kubernetes), the route changed in the
#     test API server (weir-apiserver, the one the e2e tests use) with merge patches;
#  3. certificates signed per second.
# The controller polls its directory every 20 ms with a 10 ms debounce (the flags are in the
# commands below). nginx and HAProxy have no control plane to compare with: their equivalent,
# a reload, is not measured here.
#   CHANGES=100 NODES=1000 bench/controller.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/bench/lib.sh"
CHANGES=${CHANGES:-100}
NODES=${NODES:-1000}
work=${WEIR_BENCH_DIR:-/tmp/weir-bench-controller}
rm -rf "$work" && mkdir -p "$work/config" "$work/big"
ulimit -n "$(ulimit -Hn)"
bash "$kit/setup.sh" >/dev/null
(cd "$root" && cargo build --release -q -p weir-controller -p weir-ingress -p weir-e2e --bins)
bin=$root/target/release

route() { printf -- '---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: %s, namespace: bench}\nspec: {parentRefs: [{name: gw}], hostnames: [%s.bench], rules: [{backendRefs: [{name: backend, port: 80}]}]}\n' "$1" "$1"; }
{ backend_objects; route steady; } > "$work/config/bench.yaml"

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; "$kit/scripts/stop_peers.sh" >/dev/null 2>&1 || true; }
trap cleanup EXIT
PEERS=backend "$kit/scripts/start_peers.sh" >/dev/null

steady_report() {  # steady_report WRK_OUTPUT
  local requests non2xx errors
  requests=$(awk '/requests in/ {print $1}' "$1")
  non2xx=$(awk '/Non-2xx/ {print $NF}' "$1")
  errors=$(awk '/Socket errors/ {print}' "$1")
  echo "steady load meanwhile: $requests requests, non-2xx: ${non2xx:-0}, ${errors:-socket errors: none}"
}

controller() {  # controller CONFIG_DIR LOG
  "$bin/weir-controller" run --config-dir "$1" --state-dir "$work/state" --grpc 127.0.0.1:18150 \
    --admin 127.0.0.1:18151 --poll-interval 20ms --debounce 10ms 2>"$2" & pids+=($!)
  controller_pid=$!
  for _ in $(seq 100); do curl -sf 127.0.0.1:18151/readyz >/dev/null && return; sleep 0.1; done
  echo "controller not ready" >&2; exit 1
}
controller "$work/config" "$work/controller.log"
"$bin/weir-controller" token --state-dir "$work/state" --namespace weir-system --service-account weir-ingress > "$work/token"
target=(--controller https://127.0.0.1:18150 --ca "$work/state/trust-bundle.pem" --token "$work/token")

echo "== 1. object change → served by a connected ingress ($CHANGES changes, under load)"
"$bin/weir-ingress" --controller https://127.0.0.1:18150 --controller-ca "$work/state/trust-bundle.pem" \
  --identity-token-file "$work/token" --listen 127.0.0.1:18152 --admin 127.0.0.1:18153 \
  --workers 1 --access-log off 2>"$work/ingress.log" & pids+=($!)
for _ in $(seq 100); do curl -sf 127.0.0.1:18153/readyz >/dev/null && break; sleep 0.1; done
wrk -t1 -c16 -d"$((CHANGES / 4 + 10))s" -H "Host: steady.bench" http://127.0.0.1:18152/ > "$work/wrk.txt" & wrk_pid=$!
sleep 1
"$bin/weir-fleet" propagation --ingress 127.0.0.1:18152 --config-dir "$work/config" --changes "$CHANGES"
wait $wrk_pid
steady_report "$work/wrk.txt"

echo "== 1b. the same in Kubernetes mode: object patched in the API server → served"
printf 'apiVersion: v1\nkind: Namespace\nmetadata: {name: bench}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: weir-system}\n---\n' > "$work/namespaces.yaml"
"$bin/weir-apiserver" --kubeconfig "$work/kubeconfig" --token "bench-ingress-token=weir-system/weir-ingress" \
  "$work/namespaces.yaml" "$work/config/bench.yaml" > "$work/apiserver.url" & pids+=($!)
for _ in $(seq 100); do [ -s "$work/apiserver.url" ] && break; sleep 0.1; done
mkdir -p "$work/k8s-state"
"$bin/weir-controller" run --kubernetes --kubeconfig "$work/kubeconfig" --state-dir "$work/k8s-state" \
  --grpc 127.0.0.1:18160 --admin 127.0.0.1:18161 --debounce 10ms 2>"$work/controller-k8s.log" & pids+=($!)
for _ in $(seq 100); do curl -sf 127.0.0.1:18161/readyz >/dev/null && break; sleep 0.1; done
echo -n bench-ingress-token > "$work/k8s.token"
"$bin/weir-ingress" --controller https://127.0.0.1:18160 --controller-ca "$work/k8s-state/trust-bundle.pem" \
  --identity-token-file "$work/k8s.token" --listen 127.0.0.1:18162 --admin 127.0.0.1:18163 \
  --workers 1 --access-log off 2>"$work/ingress-k8s.log" & pids+=($!)
for _ in $(seq 100); do curl -sf 127.0.0.1:18163/readyz >/dev/null && break; sleep 0.1; done
wrk -t1 -c16 -d"$((CHANGES / 4 + 10))s" -H "Host: steady.bench" http://127.0.0.1:18162/ > "$work/wrk-k8s.txt" & wrk_pid=$!
sleep 1
"$bin/weir-fleet" propagation --ingress 127.0.0.1:18162 --api-server "$(cat "$work/apiserver.url")" --changes "$CHANGES"
wait $wrk_pid
steady_report "$work/wrk-k8s.txt"

echo "== 2a. $NODES simulated nodes, small config"
"$bin/weir-fleet" nodes "${target[@]}" --count "$NODES" --config-dir "$work/config" --changes 20
echo "controller RSS with $NODES nodes: $(awk '/VmRSS/ {print $2, $3}' /proc/$controller_pid/status)"

echo "== 3. certificates signed per second"
"$bin/weir-controller" token --state-dir "$work/state" --namespace bench --service-account app > "$work/app.token"
"$bin/weir-fleet" certs --controller https://127.0.0.1:18150 --ca "$work/state/trust-bundle.pem" \
  --token "$work/app.token" --account bench/app --seconds 5 --concurrency 16

echo "== 2b. $NODES simulated nodes, 10,000 routes and 10,000 endpoints"
kill $controller_pid; wait $controller_pid 2>/dev/null || true
python3 - "$work/big" <<'PY'
import sys
out = sys.argv[1]
with open(f"{out}/big.yaml", "w") as f:
    f.write("apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: bench}\n"
            "spec: {gatewayClassName: weir, listeners: [{name: http, protocol: HTTP, port: 80}]}\n")
    f.write("---\napiVersion: v1\nkind: Service\nmetadata: {name: backend, namespace: bench}\nspec: {ports: [{name: http, port: 80}]}\n")
    for s in range(1000):
        f.write(f"---\napiVersion: v1\nkind: Service\nmetadata: {{name: svc-{s}, namespace: bench}}\nspec: {{ports: [{{name: http, port: 80}}]}}\n")
        eps = ", ".join(f"{{addresses: [10.{s // 250}.{s % 250}.{e + 1}]}}" for e in range(10))
        f.write(f"---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: svc-{s}-1, namespace: bench, labels: {{kubernetes.io/service-name: svc-{s}}}}}\n"
                f"addressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints: [{eps}]\n")
    for r in range(10000):
        f.write(f"---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r-{r}, namespace: bench}}\n"
                f"spec: {{parentRefs: [{{name: gw}}], hostnames: [r-{r}.bench], rules: [{{matches: [{{path: {{type: PathPrefix, value: /api/{r}}}}}], backendRefs: [{{name: svc-{r % 1000}, port: 80}}]}}]}}\n")
PY
controller "$work/big" "$work/controller-big.log"
"$bin/weir-fleet" nodes "${target[@]}" --count "$NODES" --config-dir "$work/big" --changes 5
echo "controller with $NODES nodes, 10,000 routes, 10,000 endpoints: $(awk '/VmRSS/ {print "RSS", $2, $3}' /proc/$controller_pid/status), $(awk '/VmHWM/ {print "peak", $2, $3}' /proc/$controller_pid/status)"
curl -s 127.0.0.1:18151/metrics | grep -E '^weir_controller_(push_seconds|compile_seconds)_(sum|count)'
