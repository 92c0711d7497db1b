#!/usr/bin/env bash
# bench/ratelimit.sh — what a request costs under each kind of rate limit, in one run: no
# limit, a local limit, a global limit with one Redis call per request, and a batched global
# limit (syncInterval 100ms). For each: requests/s, weir-ingress CPU per request, and Redis
# script calls and commands (those run inside scripts included) per request, from INFO
# commandstats.
#
# One weir-ingress (one worker, CPU 1, access log off as in bench/security.sh) in front of the
# peer kit's nginx backend (CPU 0); a redis-server on loopback (CPU 0); wrk -c32 (CPU 0) on
# one key per route. Limits are set high enough never to refuse. Runs are interleaved route
# by route, ROUNDS times; medians are printed.
#   DURATION=5 ROUNDS=3 bench/ratelimit.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd) && . "$root/bench/lib.sh"
: "${DURATION:=5}" "${ROUNDS:=3}" "${WEIR_BENCH_DIR:=/tmp/weir-bench-ratelimit}"
work=$WEIR_BENCH_DIR && rm -rf "$work" && mkdir -p "$work/config"
bash "$kit/setup.sh" >/dev/null
(cd "$root" && cargo build --release -q -p weir-ingress)
bin=${CARGO_TARGET_DIR:-$root/target}/release

route() { printf -- '---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: %s, namespace: bench}\nspec: {parentRefs: [{name: gw}], hostnames: [%s.bench], rules: [{backendRefs: [{name: backend, port: 80}]}]}\n' "$1" "$1"; }
limit() { printf -- "---\napiVersion: weir.dev/v1alpha1\nkind: RateLimitPolicy\nmetadata: {name: %s, namespace: bench}\nspec:\n  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: %s}]\n  limits: [{name: all, key: {route: {}}, rate: {requests: 100000000, per: 1s}%s}]\n" "$1" "$1" "$2"; }
routes=(plain local global batched)
{ backend_objects; for r in "${routes[@]}"; do route "$r"; done
  limit local ""; limit global ", scope: global"
  limit batched ", scope: global, syncInterval: 100ms"; } > "$work/config/bench.yaml"

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; "$kit/scripts/stop_peers.sh" >/dev/null 2>&1 || true; }
trap cleanup EXIT
PEERS=backend "$kit/scripts/start_peers.sh" >/dev/null
redis_port=16392
taskset -c 0 redis-server --port $redis_port --bind 127.0.0.1 --save '' --appendonly no >/dev/null & pids+=($!)
taskset -c 1 "$bin/weir-ingress" --config-dir "$work/config" --listen 127.0.0.1:18098 --admin 127.0.0.1:18099 \
  --workers 1 --access-log off --redis "redis://127.0.0.1:$redis_port" 2>"$work/weir.log" & pids+=($!)
weir=${pids[-1]}
sleep 1.5

# Redis commands executed so far: script calls (EVAL, EVALSHA), then every command, those a
# script runs included (INFO, the measuring itself, excluded).
redis_calls() { redis-cli -p $redis_port info commandstats | awk -F'[:=,]' '
  /^cmdstat_eval/ {e += $3} /^cmdstat_/ && $1 != "cmdstat_info" {s += $3} END {print e + 0, s + 0}'; }
hz=$(getconf CLK_TCK)
for round in $(seq "$ROUNDS"); do
  for r in "${routes[@]}"; do
    read -r e0 c0 < <(redis_calls); t0=$(pid_ticks "$weir")
    out=$(taskset -c 0 wrk -t1 -c32 -d"${DURATION}s" -H "Host: $r.bench" http://127.0.0.1:18098/)
    t1=$(pid_ticks "$weir"); read -r e1 c1 < <(redis_calls)
    n=$(awk '/requests in/ {print $1}' <<<"$out")
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
    echo "$r $rps $n $((t1 - t0)) $((c1 - c0)) ${non2xx:-0} $((e1 - e0))" >>"$work/runs.txt"
  done
done

printf '%-8s %10s %12s %16s %16s %8s\n' route "req/s" "CPU µs/req" "scripts/req" "Redis cmds/req" non-2xx
for r in "${routes[@]}"; do
  awk -v r="$r" -v hz="$hz" '$1 == r {
      rps[++k] = $2; cpu[k] = $4 / hz * 1e6 / $3; cmd[k] = $5 / $3; scr[k] = $7 / $3; bad += $6 }
    function median(a, n,   i, j, t) {
      for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
      return a[int((n + 1) / 2)] }
    END { printf "%-8s %10.0f %12.1f %16.4f %16.4f %8d\n", r, median(rps, k), median(cpu, k), median(scr, k), median(cmd, k), bad }' "$work/runs.txt"
done
