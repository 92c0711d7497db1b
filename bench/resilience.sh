#!/usr/bin/env bash
# bench/resilience.sh — what a TrafficPolicy costs over HTTP, and how fast an open breaker fails.
#
# One weir-ingress on CPU 1 (one worker), the nginx backend from the peer kit and wrk on CPU 0,
# all on loopback, each run DURATION seconds:
#   plain     route to the backend, no policy
#   guarded   the same backend behind a full TrafficPolicy (timeout, retries + budget, breaker)
#   open      a Service whose only endpoint is dead and ejected: every request fails fast (503)
# Prints req/s, p50/p99 and CPU µs per request for each.  DURATION=10 bench/resilience.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/bench/lib.sh"
DURATION=${DURATION:-10}
work=${WEIR_BENCH_DIR:-/tmp/weir-bench}/resilience
mkdir -p "$work"
bash "$kit/setup.sh" >/dev/null
(cd "$root" && cargo build --release -q -p weir-ingress)

svc() {  # svc NAME PORT: a Service and its HTTPRoute NAME.bench
  service "$1" "$2"
  cat <<YAML
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: $1, namespace: bench}
spec:
  parentRefs: [{name: gw}]
  hostnames: [$1.bench]
  rules: [{backendRefs: [{name: $1, port: 80}]}]
---
YAML
}
{
  cat <<'YAML'
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: bench}
spec: {gatewayClassName: weir, listeners: [{name: http, protocol: HTTP, port: 80}]}
---
YAML
  svc plain 18080
  svc guarded 18080
  svc open 1
  cat <<'YAML'
apiVersion: weir.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: guarded, namespace: bench}
spec:
  targetRefs: [{group: "", kind: Service, name: guarded}]
  timeout: 5s
  retry: {attempts: 3, perTryTimeout: 1s, retryOn: [connect-failure, reset, "503"], budget: {percent: 20, minPerSecond: 10}}
  circuitBreaker: {consecutiveFailures: 5, baseEjectionTime: 30s, maxPendingRequests: 1024}
---
apiVersion: weir.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: open, namespace: bench}
spec:
  targetRefs: [{group: "", kind: Service, name: open}]
  circuitBreaker: {consecutiveFailures: 1, baseEjectionTime: 1h, maxEjectionPercent: 100}
YAML
} > "$work/bench.yaml"

trap '"$kit/scripts/stop_peers.sh" >/dev/null 2>&1 || true; kill $weir_pid 2>/dev/null || true' EXIT
PEERS="backend" "$kit/scripts/start_peers.sh" >/dev/null
taskset -c "$PROXY_CPU" "$root/target/release/weir-ingress" --config-dir "$work" \
  --listen 127.0.0.1:18087 --admin 127.0.0.1:19907 --workers 1 --access-log off > "$work/weir.log" 2>&1 &
weir_pid=$!
for _ in $(seq 100); do curl -fs http://127.0.0.1:19907/readyz >/dev/null 2>&1 && break; sleep 0.1; done
curl -s -o /dev/null -H "Host: open.bench" http://127.0.0.1:18087/   # the failure that opens the breaker
[ "$(curl -s -o /dev/null -w '%{http_code}' -H 'Host: open.bench' http://127.0.0.1:18087/)" = 503 ] \
  || { echo "breaker did not open"; exit 1; }

cpu_ticks() { awk '{print $14+$15}' "/proc/$weir_pid/stat"; }
for target in plain guarded open plain guarded open; do
  t0=$(cpu_ticks)
  out=$(taskset -c "$LOADGEN_CPU" wrk -t1 -c64 -d"${DURATION}s" --latency -H "Host: $target.bench" http://127.0.0.1:18087/)
  t1=$(cpu_ticks)
  n=$(echo "$out" | awk '/requests in/{print $1}')
  rps=$(echo "$out" | awk '/Requests\/sec/{print $2}')
  p50=$(echo "$out" | awk '$1=="50%"{print $2}')
  p99=$(echo "$out" | awk '$1=="99%"{print $2}')
  non2xx=$(echo "$out" | awk '/Non-2xx/{print $NF}')
  printf '%-8s rps=%-10s p50=%-8s p99=%-8s cpu_us/req=%s non2xx=%s\n' "$target" "$rps" "$p50" "$p99" \
    "$(python3 -c "print(round(($t1-$t0)*1e6/100/$n,1))")" "${non2xx:-0}"
done
