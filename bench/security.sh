#!/usr/bin/env bash
# bench/security.sh — what AuthPolicy and RateLimitPolicy cost through the whole proxy, side
# by side with the same route unprotected, in one run.
#
# One weir-ingress (one worker, CPU 1) in front of the peer kit's nginx backend (CPU 0), with
# three routes to it: `plain`; `jwt` (ES256 JWT from an inline JWKS + a local limit);
# `global` (the same JWT + a global limit in a redis-server on loopback). wrk (CPU 0) sends
# the same token on every request, so after the first one the JWT is a cache hit.
# Then three gateways share one global limit of 100 requests per 10 s under heavy load for
# 10 s and the admitted requests are counted.
#   DURATION=5 bench/security.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/bench/lib.sh"
DURATION=${DURATION:-5}
work=${WEIR_BENCH_DIR:-/tmp/weir-bench-security}
rm -rf "$work" && mkdir -p "$work/config" "$work/accuracy"
bash "$kit/setup.sh" >/dev/null
(cd "$root" && cargo build --release -q -p weir-ingress -p weir-e2e --bins)
bin=$root/target/release
token=$("$bin/weir-token" --jwks "$work/jwks.json" --iss https://idp.bench --aud bench --sub alice)
jwks=$(cat "$work/jwks.json")

route() { printf -- '---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: %s, namespace: bench}\nspec: {parentRefs: [{name: gw}], hostnames: [%s.bench], rules: [{backendRefs: [{name: backend, port: 80}]}]}\n' "$1" "$1"; }
auth() { printf -- "---\napiVersion: weir.dev/v1alpha1\nkind: AuthPolicy\nmetadata: {name: %s, namespace: bench}\nspec:\n  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: %s}]\n  jwt: {providers: [{name: idp, issuer: 'https://idp.bench', audiences: [bench], jwks: {inline: '%s'}, forwardClaims: {sub: X-User-Id}}]}\n" "$1" "$1" "$jwks"; }
limit() { printf -- "---\napiVersion: weir.dev/v1alpha1\nkind: RateLimitPolicy\nmetadata: {name: %s, namespace: bench}\nspec:\n  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: %s}]\n  limits: [{name: users, key: {claim: sub}, rate: {requests: %s, per: %s}, scope: %s%s}]\n" "$1" "$1" "$2" "$3" "$4" "${5:-}"; }
{ backend_objects; route plain; route jwt; route global; auth jwt; auth global
  limit jwt 100000000 1s local; limit global 100000000 1s global; } > "$work/config/bench.yaml"

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; "$kit/scripts/stop_peers.sh" >/dev/null 2>&1 || true; }
trap cleanup EXIT
PEERS=backend "$kit/scripts/start_peers.sh" >/dev/null
redis_port=16391
redis-server --port $redis_port --bind 127.0.0.1 --save '' --appendonly no >/dev/null & pids+=($!)
taskset -c 1 "$bin/weir-ingress" --config-dir "$work/config" --listen 127.0.0.1:18098 --admin 127.0.0.1:18099 \
  --workers 1 --access-log off --redis "redis://127.0.0.1:$redis_port" 2>"$work/weir.log" & pids+=($!)
sleep 1.5

printf '%-8s %12s %10s %10s %10s\n' route "req/s" p50 p99 status
for r in plain jwt global; do
  out=$(taskset -c 0 wrk -t1 -c32 -d"${DURATION}s" --latency -H "Host: $r.bench" -H "Authorization: Bearer $token" http://127.0.0.1:18098/)
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out"); p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
  printf '%-8s %12s %10s %10s %10s\n' "$r" "$rps" "$p50" "$p99" "non-2xx:${non2xx:-0}"
done

# Global accuracy: three gateways, one limit of 100 per 10 s, heavy load on all three.
{ backend_objects; route global; auth global; limit global 100 10s global; } > "$work/accuracy/bench.yaml"
ports=(18110 18112 18114)
for p in "${ports[@]}"; do
  "$bin/weir-ingress" --config-dir "$work/accuracy" --listen 127.0.0.1:$p --admin 127.0.0.1:$((p+1)) \
    --workers 1 --access-log off --redis "redis://127.0.0.1:$redis_port" 2>>"$work/accuracy.log" & pids+=($!)
done
sleep 1.5
redis-cli -p $redis_port flushall >/dev/null
for p in "${ports[@]}"; do
  wrk -t1 -c16 -d10s -H "Host: global.bench" -H "Authorization: Bearer $token" http://127.0.0.1:$p/ >"$work/accuracy-$p.txt" &
done
wait_start=$(date +%s.%N); wait $(jobs -p | tail -3) 2>/dev/null || true
admitted=0; total=0
for p in "${ports[@]}"; do
  m=$(curl -s http://127.0.0.1:$((p+1))/metrics)
  a=$(awk -F' ' '/weir_rate_limit_decisions_total\{limit="bench\/global\/users",result="allowed"\}/ {print $2}' <<<"$m")
  l=$(awk -F' ' '/weir_rate_limit_decisions_total\{limit="bench\/global\/users",result="limited"\}/ {print $2}' <<<"$m")
  admitted=$((admitted + ${a:-0})); total=$((total + ${a:-0} + ${l:-0}))
done
echo "global accuracy: $admitted admitted of $total requests over 10 s by 3 gateways; the limit allows 100 (sliding window, first window)"
