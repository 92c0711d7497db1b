#!/usr/bin/env bash
# bench/run.sh — Weir side by side with nginx and HAProxy on this machine, in one run.
#
# Everything stays on loopback and every load run is bounded (DURATION seconds each). Uses the
# peer kit in ../shared/bench (installs nginx, HAProxy, wrk, h2load from Debian on first use);
# each proxy pinned alone to CPU 1 with one worker; backend and load generator on CPU 0. Prints
# requests/s, p50, p99 and CPU µs per request for each target and Weir's ratio to nginx round by
# round (bench/paired.py).
#
# `load` — the headline: the configuration users run, over HTTP/1.1 (wrk, 64 connections),
# HTTPS keep-alive (wrk, 64 connections, TLS 1.3, the kit's ECDSA P-256 certificate), h2c and
# h2 over TLS (h2load, 8 connections x 32 streams). `weir` is weir-ingress with its defaults
# (access log on, to a file; request ids; trace context; X-Forwarded-*). `nginx` and `haproxy`
# do the same work: the same request fields, and a JSON line per request with the fields of
# Weir's (nginx buffered, `buffer=64k flush=1s`; HAProxy to stdout, to a file). `weir-quiet` is
# Weir with --access-log off and `nginx-quiet` the same nginx without its log, run beside them
# to show what each one's log costs, round by round.
# `off` — the second table, HTTP/1.1 (OFF_PROTOCOLS for more): every proxy with its access log
# off (the kit's nginx and HAProxy, which add no request fields; `weir-bare`, Weir adding none either: --request-id preserve
# --trace-context off --forwarded off; `nginx-fields`, nginx adding Weir's fields, no log).
# Then `peers` (the other core's cost), `memory` (10,000 idle keep-alive connections) and
# `routes` (a gateway holding 5,000 HTTPRoutes).
#   REPS=5 DURATION=10 bench/run.sh
#   SECTIONS="load" PROTOCOLS="h1 https" bench/run.sh   # some of: load off peers memory routes
#   OFF_PROTOCOLS="h1 https h2c h2" bench/run.sh        # the logs-off table on more than h1
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/bench/lib.sh"
REPS=${REPS:-5}
IDLE_CONNS=${IDLE_CONNS:-10000}
ROUTES=${ROUTES:-5000}
SECTIONS=" ${SECTIONS:-load off peers memory routes} "
PROTOCOLS=${PROTOCOLS:-h1 https h2c h2}
section() { [[ "$SECTIONS" == *" $1 "* ]]; }
work=${WEIR_BENCH_DIR:-/tmp/weir-bench}
mkdir -p "$work/config" "$work/routes"

bash "$kit/setup.sh" >/dev/null
(cd "$root" && cargo build --release -q -p weir-ingress)
weir=$root/target/release/weir-ingress

# The same backend the peers use, as Kubernetes objects, with the kit's certificate.
TLS=1 catch_all_objects > "$work/config/bench.yaml"

with_peers "backend nginx-proxy haproxy"

rss_kb() { awk '/^VmRSS:/{print $2}' "/proc/$1/status"; }

start_weir "$weir" "$work/config" 18089 19909 --access-log off \
  --request-id preserve --trace-context off --forwarded off
BARE_PID=$WEIR_PID
start_weir "$weir" "$work/config" 18087 19907 --listen-tls 127.0.0.1:18467 --access-log off
QUIET_PID=$WEIR_PID
start_weir "$weir" "$work/config" 18085 19905 --listen-tls 127.0.0.1:18465
base=$(rss_kb "$WEIR_PID")
start_nginx_fields 18088 18078 18468
start_nginx_log 18073 18074 18463
start_haproxy_log 18075 18076 18464

# compare TITLE TSV PROTOCOL NAME=H1/H2C/TLS[@PID]...: one table, each target's HTTP/1.1, h2c
# and TLS ports and the process whose CPU is counted; the protocol picks the port and the load
# (wrk for HTTP/1.1 and HTTPS, h2load 8x32 for HTTP/2).
compare() {
  local title=$1 tsv=$2 proto=$3 targets=() t name spec pid h1 h2c tls url
  shift 3
  for t in "$@"; do
    name=${t%%=*}; spec=${t#*=}; pid=""
    [[ $spec == *@* ]] && pid=${spec#*@} && spec=${spec%@*}
    IFS=/ read -r h1 h2c tls <<<"$spec"
    case $proto in
      h1) url=http://127.0.0.1:$h1/ ;;
      https) url=https://127.0.0.1:$tls/ ;;
      h2c) url=h2:http://127.0.0.1:$h2c/ ;;
      h2) url=h2:https://127.0.0.1:$tls/ ;;
    esac
    targets+=("$name=$url${pid:+,pid=$pid}")
  done
  case $proto in
    h2c | h2) export CONNS=8 STREAMS=32 ;;
    *) export CONNS=64 STREAMS=1 ;;
  esac
  echo "== $title: $proto, ${CONNS} connections x ${STREAMS} streams, ${DURATION:-10}s x $REPS interleaved runs"
  "$kit/scripts/compare.sh" -r "$REPS" -o "$tsv" "${targets[@]}"
  echo "-- Weir against nginx within each round"
  python3 "$root/bench/paired.py" "$tsv" weir nginx || true
}

# The access logs, emptied after each table (they take about 20 MB/s each): the lines each
# wrote, counted first.
logs=("$work/weir-18085.log" "$work/nginx-log/access.log" "$work/haproxy-log/access.log")
lines=(0 0 0)
empty_logs() {
  local i
  for i in 0 1 2; do
    lines[i]=$((lines[i] + $(wc -l < "${logs[i]}"))); : > "${logs[i]}"
  done
}

if section load; then
  for proto in $PROTOCOLS; do
    # Weir serves h2c on its HTTP/1.1 port.
    compare "the configuration users run (access logs on)" "$work/load-$proto.tsv" "$proto" \
      nginx=18073/18074/18463@"$NGINX_LOG_PID" haproxy=18075/18076/18464@"$HAPROXY_LOG_PID" \
      weir=18085/18085/18465@"$WEIR_PID" nginx-quiet=18088/18078/18468@"$NGINX_FIELDS_PID" \
      weir-quiet=18087/18087/18467@"$QUIET_PID"
    empty_logs
    echo "-- what each one's access log costs, round by round (CPU µs per request, log on less off)"
    python3 "$root/bench/paired.py" --cpu "$work/load-$proto.tsv" weir weir-quiet nginx nginx-quiet || true
  done
  echo "== access-log lines written: weir ${lines[0]}, nginx ${lines[1]}, haproxy ${lines[2]}"
fi

if section off; then
  for proto in ${OFF_PROTOCOLS:-h1}; do
    case $proto in
      h1) extra=(direct=18080 nginx-fields=18088@"$NGINX_FIELDS_PID" weir-bare=18089@"$BARE_PID") ;;
      *) extra=() ;;
    esac
    # The kit's nginx (64 idle backend connections) and HAProxy.
    compare "access logs off" "$work/off-$proto.tsv" "$proto" \
      nginx=18081/18091/18443@"$(cat "$RUN/nginx-proxy.pid")" \
      haproxy=18082/18092/18444@"$(cat "$RUN/haproxy.pid")" \
      weir=18087/18087/18467@"$QUIET_PID" "${extra[@]}"
  done
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
