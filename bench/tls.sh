#!/usr/bin/env bash
# bench/tls.sh — HTTPS: weir-ingress vs nginx with the same ECDSA P-256 certificate, in one run.
#
# Both proxy to the peer kit's backend (nginx on 127.0.0.1:18080), one worker each, pinned to
# CPU 1; the clients run on CPU 0. Measures full TLS handshakes per second and resumed ones
# (openssl s_time, one sequential client, connections per wall-clock second: a single client
# core is the limit as much as the proxy is, so read it as a side-by-side, not a ceiling), and keep-alive HTTPS requests/s (wrk, 50 connections).
#   DURATION=5 bench/tls.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/bench/lib.sh"
DURATION=${DURATION:-5}
work=${WEIR_BENCH_DIR:-/tmp/weir-bench-tls}
rm -rf "$work" && mkdir -p "$work/config" "$work/nginx"
bash "$kit/setup.sh" >/dev/null
(cd "$root" && cargo build --release -q -p weir-ingress)

# The kit's ECDSA P-256 certificate, served by both, and the backend behind a catch-all route.
TLS=1 catch_all_objects > "$work/config/bench.yaml"
cat > "$work/nginx/nginx.conf" <<NGINX
worker_processes 1;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  upstream backend { server 127.0.0.1:18080; keepalive 64; }
  server {
    listen 127.0.0.1:18443 ssl http2;
    ssl_certificate $CONF/tls/server.crt;
    ssl_certificate_key $CONF/tls/server.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:SSL:10m;
    ssl_session_tickets on;
    location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
NGINX

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" -s stop 2>/dev/null || true; "$kit/scripts/stop_peers.sh" >/dev/null 2>&1 || true; }
trap cleanup EXIT
PEERS=backend "$kit/scripts/start_peers.sh" >/dev/null
taskset -c 1 nginx -c "$work/nginx/nginx.conf" -p "$work/nginx"
taskset -c 1 "$root/target/release/weir-ingress" --config-dir "$work/config" --listen 127.0.0.1:18096 \
  --listen-tls 127.0.0.1:18444 --admin 127.0.0.1:18097 --workers 1 --access-log off 2>"$work/weir.log" &
pids+=($!)
sleep 1

printf '%-8s %18s %18s %22s\n' target "handshakes/s new" "handshakes/s resumed" "keep-alive HTTPS req/s"
for target in nginx:18443 weir:18444; do
  name=${target%%:*}; port=${target##*:}
  new=$(taskset -c 0 openssl s_time -connect 127.0.0.1:$port -new -time "$DURATION" 2>/dev/null | awk '/real seconds/ {printf "%.0f", $1/$4; exit}')
  reused=$(taskset -c 0 openssl s_time -connect 127.0.0.1:$port -reuse -time "$DURATION" 2>/dev/null | awk '/real seconds/ {printf "%.0f", $1/$4; exit}')
  rps=$(taskset -c 0 wrk -t1 -c50 -d"${DURATION}s" "https://127.0.0.1:$port/" 2>/dev/null | awk '/Requests\/sec/ {print $2}')
  printf '%-8s %18s %18s %22s\n' "$name" "$new" "$reused" "$rps"
done
