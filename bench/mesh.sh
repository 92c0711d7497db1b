#!/usr/bin/env bash
# bench/mesh.sh — the mesh data path, side by side with nginx, in one run on loopback.
#
#   direct      wrk → backend (the peer kit's nginx on 127.0.0.1:18080)
#   weir pair   wrk → weir-sidecar (client pod, explicit outbound :19101, Host backend.bench)
#                   ══ mTLS ══ weir-sidecar (backend pod, inbound :19206, STRICT) → backend
#   nginx pair  wrk → nginx (:19081, proxy_pass https with a client certificate)
#                   ══ mTLS ══ nginx (:19443, ssl_verify_client on) → backend
#               (each logging a JSON line per request, buffered; :19082 → :19444 log nothing)
#
# Both pairs use ECDSA P-256 certificates from the same CA (the controller's: the nginx pair's
# are signed with its key, with the same SPIFFE IDs), TLS 1.3, pooled keep-alive connections
# between the two proxies. The four proxies run one worker each, all pinned to CPU 1; wrk,
# the backend and the controller run on CPU 0. Measures, with the peer kit's compare.sh
# (interleaved runs, medians): req/s, p50, p99 and proxy CPU per request at CONNS_LIST
# concurrencies; then idle resident memory of a sidecar, memory per idle keep-alive
# connection (outbound plaintext from the app, inbound mTLS from a peer), and mTLS handshakes
# per second of proxy CPU (openssl s_time with a client certificate: a full handshake and one
# request per connection, so both servers finish every handshake).
#
# Each weir pair is in a namespace of its own and the client sidecar is asked for `Host:
# backend` (the Service of its own namespace): `bench` runs the default configuration (the
# access log on, written to a file; against `nginx-pair`, which logs too), `quiet` the same
# binaries with `--access-log off` (against `nginx-pair-quiet`), and with WEIR_BEFORE_DIR=DIR (a directory holding another build's
# weir-sidecar) `before` runs that build, for a comparison with an earlier commit in the same
# run.
#   REPS=3 DURATION=5 CONNS_LIST="1 32" HOLD_N=2000 [WEIR_BEFORE_DIR=/tmp/base] bench/mesh.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/bench/lib.sh"
REPS=${REPS:-3}
DURATION=${DURATION:-5}
CONNS_LIST=${CONNS_LIST:-"1 32"}
HOLD_N=${HOLD_N:-2000}
work=${WEIR_BENCH_DIR:-/tmp/weir-bench-mesh}
rm -rf "$work" && mkdir -p "$work/config" "$work/state" "$work/nginx-a" "$work/nginx-b"
ulimit -n "$(ulimit -Hn)"

bash "$kit/setup.sh" >/dev/null
(cd "$root" && cargo build --release -q -p weir-controller -p weir-sidecar)
bin=$root/target/release

# Two meshed pods per pair as a cluster describes them, under STRICT; each endpoint is its
# sidecar's inbound port.
pair_objects() { # NAMESPACE CLIENT_INBOUND BACKEND_INBOUND
  pod "$1" client "$2"; pod "$1" backend "$3"; cat <<YAML
apiVersion: weir.dev/v1alpha1
kind: MeshTLSPolicy
metadata: {name: default, namespace: $1}
spec: {mode: STRICT}
---
YAML
}
{ pair_objects bench 19106 19206; pair_objects quiet 19306 19406
  [ -n "${WEIR_BEFORE_DIR:-}" ] && pair_objects before 19506 19606
} > "$work/config/mesh.yaml"

pids=()
cleanup() {
  kill "${pids[@]}" 2>/dev/null || true
  for side in a b; do nginx -c "$work/nginx-$side/nginx.conf" -p "$work/nginx-$side" -s stop 2>/dev/null || true; done
  PEERS=backend "$kit/scripts/stop_peers.sh" >/dev/null 2>&1 || true
}
trap cleanup EXIT
PEERS=backend "$kit/scripts/start_peers.sh" >/dev/null
ready() { for _ in $(seq 100); do curl -fs "$1" >/dev/null 2>&1 && return; sleep 0.1; done; echo "not ready: $1" >&2; exit 1; }

taskset -c 0 "$bin/weir-controller" run --config-dir "$work/config" --state-dir "$work/state" \
  --grpc 127.0.0.1:19010 --admin 127.0.0.1:19014 2>"$work/controller.log" & pids+=($!)
ready http://127.0.0.1:19014/readyz
sidecar() { # BINARY NAMESPACE NAME INBOUND OUTBOUND ADMIN [FLAG...]
  "$bin/weir-controller" token --state-dir "$work/state" --namespace "$2" --service-account "$3" > "$work/$2-$3.token"
  taskset -c 1 "$1" run --controller https://127.0.0.1:19010 \
    --controller-ca "$work/state/trust-bundle.pem" --identity-token-file "$work/$2-$3.token" \
    --namespace "$2" --pod "$3-0" --service-account "$3" --app-port 18080 \
    --inbound "127.0.0.1:$4" --outbound "127.0.0.1:$5" --admin "127.0.0.1:$6" "${@:7}" \
    >"$work/$2-$3.access.log" 2>"$work/$2-$3.log" &
  pids+=($!)
}
sidecar "$bin/weir-sidecar" bench client 19106 19101 19120; client_pid=$!
sidecar "$bin/weir-sidecar" bench backend 19206 19201 19220; backend_pid=$!
sidecar "$bin/weir-sidecar" quiet client 19306 19301 19320 --access-log off; quiet_client=$!
sidecar "$bin/weir-sidecar" quiet backend 19406 19401 19420 --access-log off; quiet_backend=$!
echo "$quiet_client $quiet_backend" > "$RUN/weir-mesh-quiet.pid"
before_targets=()
if [ -n "${WEIR_BEFORE_DIR:-}" ]; then
  sidecar "$WEIR_BEFORE_DIR/weir-sidecar" before client 19506 19501 19520; before_client=$!
  sidecar "$WEIR_BEFORE_DIR/weir-sidecar" before backend 19606 19601 19620; before_backend=$!
  echo "$before_client $before_backend" > "$RUN/weir-mesh-before.pid"
  before_targets=(weir-pair-before=http://127.0.0.1:19501/,pid=weir-mesh-before)
  ready http://127.0.0.1:19520/readyz; ready http://127.0.0.1:19620/readyz
fi
for admin in 19120 19220 19320 19420; do ready "http://127.0.0.1:$admin/readyz"; done
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
sleep 1
idle_client=$(rss_kb "$client_pid"); idle_backend=$(rss_kb "$backend_pid")

# The nginx pair's certificates, from the controller's CA.
cert() { # NAME SAN EXTENDED_KEY_USAGE
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/O=bench" \
    -keyout "$work/$1.key" -out "$work/$1.csr" 2>/dev/null
  printf 'subjectAltName=%s\nextendedKeyUsage=%s\n' "$2" "$3" > "$work/$1.ext"
  openssl x509 -req -in "$work/$1.csr" -CA "$work/state/ca.crt" -CAkey "$work/state/ca.key" \
    -days 1 -extfile "$work/$1.ext" -out "$work/$1.crt" 2>/dev/null
}
cert client URI:spiffe://cluster.local/ns/bench/sa/client clientAuth
cert backend URI:spiffe://cluster.local/ns/bench/sa/backend,DNS:backend.bench.svc serverAuth
nginx_conf() { # SIDE: nginx.conf for one of the pair, the http block's body on stdin
  cat > "$work/nginx-$1/nginx.conf" <<NGINX
worker_processes 1;
pid $work/nginx-$1/nginx.pid;
error_log $work/nginx-$1/error.log;
events { worker_connections 8192; }
http {
  log_format weir escape=json '{"time":"\$time_iso8601","client":"\$remote_addr:\$remote_port",'
    '"protocol":"\$server_protocol","method":"\$request_method","host":"\$host","path":"\$uri",'
    '"status":\$status,"endpoint":"\$upstream_addr","duration_ms":\$request_time,'
    '"upstream_ms":"\$upstream_header_time","bytes_in":\$request_length,'
    '"bytes_out":\$body_bytes_sent,"request_id":"\$http_x_request_id","user_agent":"\$http_user_agent"}';
  access_log $work/nginx-$1/access.log weir buffer=64k flush=1s;
$(cat)
}
NGINX
}
# Each side serves twice: logging a JSON line per request (buffered, as nginx advises), as the
# weir pair does by default (front 19081, back 19443); and with no log (19082, 19444), as the
# quiet weir pair.
front() { # PORT BACK_PORT LOG_LINE
  cat <<NGINX
  upstream mesh-$2 { server 127.0.0.1:$2; keepalive 64; }
  server {
    listen 127.0.0.1:$1;
    $3
    location / {
      proxy_pass https://mesh-$2;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_ssl_certificate $work/client.crt;
      proxy_ssl_certificate_key $work/client.key;
      proxy_ssl_trusted_certificate $work/state/ca.crt;
      proxy_ssl_verify on;
      proxy_ssl_name backend.bench.svc;
      proxy_ssl_protocols TLSv1.3;
      proxy_ssl_session_reuse on;
    }
  }
NGINX
}
back() { # PORT LOG_LINE
  cat <<NGINX
  server {
    listen 127.0.0.1:$1 ssl;
    $2
    ssl_certificate $work/backend.crt;
    ssl_certificate_key $work/backend.key;
    ssl_client_certificate $work/state/ca.crt;
    ssl_verify_client on;
    ssl_protocols TLSv1.3;
    location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
NGINX
}
{ front 19081 19443 ""; front 19082 19444 "access_log off;"; } | nginx_conf a
{ echo '  upstream backend { server 127.0.0.1:18080; keepalive 64; }'
  back 19443 ""; back 19444 "access_log off;"; } | nginx_conf b
for side in a b; do taskset -c 1 nginx -c "$work/nginx-$side/nginx.conf" -p "$work/nginx-$side"; done
sleep 0.5
nginx_a=$(cat "$work/nginx-a/nginx.pid"); nginx_b=$(cat "$work/nginx-b/nginx.pid")
for url in http://127.0.0.1:19101/ http://127.0.0.1:19301/ http://127.0.0.1:19081/ http://127.0.0.1:19082/ \
  ${WEIR_BEFORE_DIR:+http://127.0.0.1:19501/}; do
  code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Host: backend' "$url")
  [ "$code" = 200 ] || { echo "$url answered $code; logs in $work" >&2; exit 1; }
done
echo "$client_pid $backend_pid" > "$RUN/weir-mesh-pair.pid"
echo "$nginx_a $nginx_b" > "$RUN/nginx-mesh-pair.pid"

echo "== latency and throughput (wrk, DURATION=${DURATION}s, REPS=$REPS, medians)"
for conns in $CONNS_LIST; do
  echo "-- $conns connection(s)"
  CONNS=$conns DURATION=$DURATION WRK_HEADER="Host: backend" "$kit/scripts/compare.sh" \
    -r "$REPS" -o "$work/compare-c$conns.tsv" \
    direct=http://127.0.0.1:18080/ \
    nginx-pair=http://127.0.0.1:19081/,pid=nginx-mesh-pair \
    nginx-pair-quiet=http://127.0.0.1:19082/,pid=nginx-mesh-pair \
    weir-pair=http://127.0.0.1:19101/,pid=weir-mesh-pair \
    weir-pair-quiet=http://127.0.0.1:19301/,pid=weir-mesh-quiet \
    "${before_targets[@]}" 2>>"$work/compare.log"
done

echo "== memory"
echo "idle sidecar RSS: client $((idle_client / 1024)).$(( (idle_client % 1024) * 10 / 1024 )) MiB, backend $((idle_backend / 1024)).$(( (idle_backend % 1024) * 10 / 1024 )) MiB (after start, before any traffic)"
echo "after the load runs: client $(( $(rss_kb "$client_pid") / 1024 )) MiB, backend $(( $(rss_kb "$backend_pid") / 1024 )) MiB"
tree_rss() { local s=0 p; for p in "$@" $(cat /proc/"$1"/task/*/children 2>/dev/null); do s=$((s + $(rss_kb "$p"))); done; echo $s; }
per_conn() { # LABEL PID PORT [hold_conns options]: resident memory per idle keep-alive connection
  local label=$1 pid=$2 port=$3; shift 3
  local before held ready=$work/hold.ready
  rm -f "$ready"
  before=$(tree_rss "$pid")
  taskset -c 0 python3 "$root/bench/hold_conns.py" --port "$port" -n "$HOLD_N" --host-header backend.bench \
    --hold 6 --ready-file "$ready" "$@" > "$work/hold.log" 2>&1 &
  local hp=$!
  for _ in $(seq 600); do [ -s "$ready" ] && break; kill -0 $hp 2>/dev/null || break; sleep 0.1; done
  sleep 2
  held=$(tree_rss "$pid")
  wait $hp || true
  printf '%-46s %s  %6.1f KiB/conn\n' "$label" "$(cat "$ready" 2>/dev/null || echo 'no connections')" \
    "$(echo "($held - $before) / $HOLD_N" | bc -l)"
}
mtls=(--cert "$work/client.crt" --key "$work/client.key" --ca "$work/state/ca.crt")
per_conn "weir client sidecar, app → outbound (plain)" "$client_pid" 19101
per_conn "nginx pair front, client → :19081 (plain)" "$nginx_a" 19081
per_conn "weir backend sidecar, peer → inbound (mTLS)" "$backend_pid" 19206 "${mtls[@]}"
per_conn "nginx pair back, peer → :19443 (mTLS)" "$nginx_b" 19443 "${mtls[@]}"

echo "== mTLS handshakes (openssl s_time -new -www /: a full handshake with a client certificate and"
echo "   one request per connection, 2 clients on CPU 0, ${DURATION}s)"
handshakes() { # LABEL PID PORT
  local t0 t1 n=0 out clients=()
  t0=$(pid_ticks "$2")
  for i in 1 2; do
    taskset -c 0 openssl s_time -connect "127.0.0.1:$3" -new -www / -time "$DURATION" \
      -cert "$work/client.crt" -key "$work/client.key" -CAfile "$work/state/ca.crt" > "$work/s_time.$i" 2>&1 &
    clients+=($!)
  done
  wait "${clients[@]}"
  t1=$(pid_ticks "$2")
  for i in 1 2; do out=$(awk '/connections in [0-9.]+s/ {print $1; exit}' "$work/s_time.$i"); n=$((n + ${out:-0})); done
  local cpu_s; cpu_s=$(echo "($t1 - $t0) / $(getconf CLK_TCK)" | bc -l)
  printf '%-28s %6d handshakes, %5.2f s proxy CPU: %6.0f handshakes per CPU-second\n' "$1" "$n" "$cpu_s" \
    "$(echo "$n / ($cpu_s + 0.0001)" | bc -l)"
}
inbound_handshakes() { curl -s http://127.0.0.1:19220/metrics | awk -v r="$1" '$1 == "weir_mesh_tls_handshakes_total{direction=\"inbound\",result=\"" r "\"}" {print $2}'; }
ok0=$(inbound_handshakes ok); failed0=$(inbound_handshakes error)
handshakes "weir backend sidecar" "$backend_pid" 19206
ok1=$(inbound_handshakes ok); failed1=$(inbound_handshakes error)
echo "  (the sidecar counted $(( ${ok1:-0} - ${ok0:-0} )) completed mTLS handshakes, $(( ${failed1:-0} - ${failed0:-0} )) failed)"
handshakes "nginx pair back" "$nginx_b" 19443
rm -f "$RUN/weir-mesh-pair.pid" "$RUN/nginx-mesh-pair.pid"
