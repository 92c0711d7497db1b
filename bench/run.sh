#!/usr/bin/env bash
# bench/run.sh — Weir side by side with nginx and HAProxy on this machine, in one run.
#
# Everything stays on loopback and every load run is bounded (DURATION seconds each). Uses the
# peer kit in ../shared/bench (installs nginx, HAProxy, wrk from Debian on first use):
#   backend nginx on 127.0.0.1:18080, nginx proxy :18081, HAProxy :18082, weir-ingress :18085;
#   each proxy pinned alone to CPU 1 with one worker; backend and load generator on CPU 0.
# Prints requests/s, p50, p99 and CPU µs per request for each target, Weir's ratio to nginx
# round by round (bench/paired.py), then the memory of 10,000 idle keep-alive connections and
# of a gateway holding 5,000 HTTPRoutes. `nginx-fields` (:18088) is nginx set up to add the
# request fields the issue asks of Weir (X-Forwarded-*, x-request-id, traceparent); the kit's
# nginx adds none. `weir-bare` (:18089) is Weir set to add none of them either (--request-id
# preserve --trace-context off --forwarded off): the kit's nginx's job, for a comparison at
# equal work the other way round.
#   REPS=5 DURATION=10 bench/run.sh
#   SECTIONS=memory bench/run.sh     # only some of: load peers memory routes
# The `peers` section shows what each proxy costs the other core, where wrk and the backend
# share CPU 0 and which the load saturates too: both cores' busy time, and per request the
# backend's CPU time and how often it ran out of work and slept.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/bench/lib.sh"
REPS=${REPS:-5}
IDLE_CONNS=${IDLE_CONNS:-10000}
ROUTES=${ROUTES:-5000}
SECTIONS=" ${SECTIONS:-load peers memory routes} "
section() { [[ "$SECTIONS" == *" $1 "* ]]; }
work=${WEIR_BENCH_DIR:-/tmp/weir-bench}
mkdir -p "$work/config" "$work/routes"

bash "$kit/setup.sh" >/dev/null
(cd "$root" && cargo build --release -q -p weir-ingress)
weir=$root/target/release/weir-ingress

# The same backend the peers use, as Kubernetes objects.
catch_all_objects > "$work/config/bench.yaml"

with_peers "backend nginx-proxy haproxy"

rss_kb() { awk '/^VmRSS:/{print $2}' "/proc/$1/status"; }

start_weir "$weir" "$work/config" 18089 19909 \
  --request-id preserve --trace-context off --forwarded off
BARE_PID=$WEIR_PID
start_weir "$weir" "$work/config" 18085 19905
base=$(rss_kb "$WEIR_PID")
start_nginx_fields 18088
if section load; then
  echo "== throughput and latency: HTTP/1.1 keep-alive, ${CONNS:-64} connections, ${DURATION:-10}s x $REPS interleaved runs"
  "$kit/scripts/compare.sh" -r "$REPS" -o "$work/compare.tsv" \
    direct=http://127.0.0.1:18080/ \
    nginx=http://127.0.0.1:18081/,pid=nginx-proxy \
    nginx-fields=http://127.0.0.1:18088/,pid="$NGINX_FIELDS_PID" \
    haproxy=http://127.0.0.1:18082/,pid=haproxy \
    weir=http://127.0.0.1:18085/,pid="$WEIR_PID" \
    weir-bare=http://127.0.0.1:18089/,pid="$BARE_PID"
  echo "== Weir against nginx within each round (both ran in it, minutes apart)"
  python3 "$root/bench/paired.py" "$work/compare.tsv" weir nginx
  echo "== Weir against nginx setting the same request fields (X-Forwarded-*, x-request-id, traceparent)"
  python3 "$root/bench/paired.py" "$work/compare.tsv" weir nginx-fields
  echo "== Weir adding none of those fields (weir-bare) against the kit's nginx, which adds none"
  python3 "$root/bench/paired.py" "$work/compare.tsv" weir-bare nginx
fi

if section peers; then
  echo "== the other core: wrk and the backend on CPU $BACKEND_CPU, ${PEER_DURATION:-5}s x $REPS (name req/s backend_us/req backend_sleeps/req proxy_us/req, busy per core)"
  # The backend's worker: its master only waits, and the sleeps counted are the worker's.
  backend=$(pgrep -P "$(cat "$RUN/backend.pid")" | head -1)
  sleeps() { awk '/^voluntary_ctxt_switches/{print $2}' "/proc/$backend/status"; }
  us_per_tick=$((1000000 / $(getconf CLK_TCK)))
  for _ in $(seq "$REPS"); do
    for target in nginx=18081=$(cat "$RUN/nginx-proxy.pid") \
      nginx-fields=18088=$NGINX_FIELDS_PID weir=18085=$WEIR_PID weir-bare=18089=$BARE_PID; do
      IFS== read -r name port pid <<<"$target"
      taskset -c "$BACKEND_CPU" wrk -t1 -c"${CONNS:-64}" -d1s "http://127.0.0.1:$port/" >/dev/null
      cores=$(cpu_snap); t=$(pid_ticks "$backend"); s=$(sleeps); p=$(pid_ticks "$pid")
      out=$(taskset -c "$BACKEND_CPU" wrk -t1 -c"${CONNS:-64}" -d"${PEER_DURATION:-5}s" "http://127.0.0.1:$port/")
      busy=$(cpu_busy "$cores" "$(cpu_snap)")
      n=$(echo "$out" | awk '/requests in/{print $1}')
      awk -v name="$name" -v n="$n" -v secs="${PEER_DURATION:-5}" -v tick="$us_per_tick" \
        -v bt="$(( $(pid_ticks "$backend") - t ))" -v bs="$(( $(sleeps) - s ))" \
        -v pt="$(( $(pid_ticks "$pid") - p ))" -v busy="$busy" 'BEGIN {
          printf "%-6s %8.0f %6.2f %6.3f %6.2f  %s\n", name, n / secs,
            bt * tick / n, bs / n, pt * tick / n, busy }'
    done
  done
fi

if section memory; then
  echo "== memory: $IDLE_CONNS idle keep-alive client connections (N rss_before_kb rss_held_kb rss_after_kb bytes_per_conn slab_delta_kb)"
  printf 'weir   '; "$kit/scripts/mem_idle.sh" 18085 "$WEIR_PID" "$IDLE_CONNS" 2>/dev/null
  printf 'nginx  '; "$kit/scripts/mem_idle.sh" 18081 "$(cat "$RUN/nginx-proxy.pid")" "$IDLE_CONNS" 2>/dev/null
  printf 'haproxy '; "$kit/scripts/mem_idle.sh" 18082 "$(cat "$RUN/haproxy.pid")" "$IDLE_CONNS" 2>/dev/null
fi

section routes || exit 0
echo "== memory: a gateway holding $ROUTES HTTPRoutes (each with its own hostname and 2 rules)"
python3 - "$work/routes" "$ROUTES" <<'PY'
import sys
out, n = sys.argv[1], int(sys.argv[2])
with open(f"{out}/routes.yaml", "w") as f:
    f.write(open(sys.argv[1] + "/../config/bench.yaml").read())
    for i in range(n):
        f.write(f"""---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r{i}, namespace: bench}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [app{i}.example.com]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /api/v{i % 7}}}, headers: [{{name: x-tenant, value: t{i}}}]}}]
    filters: [{{type: RequestHeaderModifier, requestHeaderModifier: {{set: [{{name: x-route, value: r{i}}}]}}}}]
    backendRefs: [{{name: backend, port: 80}}]
  - matches: [{{path: {{type: PathPrefix, value: /}}}}]
    backendRefs: [{{name: backend, port: 80}}]
""")
PY
start_weir "$weir" "$work/routes" 18086 19906
curl -fs -H "Host: app4999.example.com" http://127.0.0.1:18086/ >/dev/null && echo "routing through route 4999 works"
echo "weir with 1 route: ${base} KiB RSS; with $ROUTES HTTPRoutes: $(rss_kb "$WEIR_PID") KiB RSS"
