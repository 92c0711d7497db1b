#!/usr/bin/env bash
# bench/passthrough.sh — TLS passthrough by SNI (a TLSRoute), side by side with nginx `stream`
# (`ssl_preread`) and HAProxy `mode tcp` (`req.ssl_sni`), in one run on loopback.
#
#   client (h2load, CPU 0) ──TLS, SNI bench.example──▶ proxy (CPU 1, one worker)
#       ──▶ the TLS backend (nginx on CPU 0: the kit's ECDSA P-256 certificate, `return 200`)
#
# Each proxy reads the ClientHello's SNI, picks the backend by it, and copies bytes both ways
# without opening the TLS; each writes a log line per connection (Weir: its access log, on by
# default; nginx: a JSON `stream` log, buffered; HAProxy: `option tcplog` to a file through
# stdout). Measured per round, targets interleaved, medians of REPS rounds: requests/s and
# proxy CPU per request over keep-alive connections (HTTP/1.1, CONNS connections), and over
# new connections (each connection sends NEW_REQS requests and closes: the per-connection work
# of reading the ClientHello, choosing and dialing shows there).
#   REPS=5 DURATION=5 bench/passthrough.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/bench/lib.sh"
REPS=${REPS:-5}
DURATION=${DURATION:-5}
CONNS=${CONNS:-64}
NEW_REQS=${NEW_REQS:-1}
work=${WEIR_BENCH_DIR:-/tmp/weir-bench-passthrough}
rm -rf "$work" && mkdir -p "$work/config" "$work/backend/tmp" "$work/nginx/tmp" "$work/haproxy"
bash "$kit/setup.sh" >/dev/null
# nginx's stream module is a package of its own on Debian.
[ -e /usr/lib/nginx/modules/ngx_stream_module.so ] ||
  { apt-get install -y -q libnginx-mod-stream >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q libnginx-mod-stream >/dev/null; }; }
(cd "$root" && cargo build --release -q -p weir-ingress)
ulimit -n "$(ulimit -Hn)"
TLS_DIR=$CONF/tls
BACKEND=19443 WEIR=19447 WEIR_ADMIN=19449 NGINX=19448 HAPROXY=19450

# The TLS backend: answers every request itself, on CPU 0 with the client.
cat > "$work/backend/nginx.conf" <<NGINX
worker_processes 1;
pid $work/backend/nginx.pid;
error_log $work/backend/error.log;
events { worker_connections 16384; }
http {
  access_log off;
  client_body_temp_path $work/backend/tmp/body;
  proxy_temp_path $work/backend/tmp/proxy;
  fastcgi_temp_path $work/backend/tmp/fastcgi;
  uwsgi_temp_path $work/backend/tmp/uwsgi;
  scgi_temp_path $work/backend/tmp/scgi;
  keepalive_requests 10000000;
  server {
    listen 127.0.0.1:$BACKEND ssl http2 backlog=4096;
    ssl_certificate $TLS_DIR/server.crt;
    ssl_certificate_key $TLS_DIR/server.key;
    ssl_protocols TLSv1.3;
    location / { return 200 "ok"; }
  }
}
NGINX

# Weir: a Gateway TLS listener in Passthrough mode and a TLSRoute for bench.example.
cat > "$work/config/passthrough.yaml" <<YAML
apiVersion: v1
kind: Namespace
metadata: {name: bench}
---
apiVersion: v1
kind: Service
metadata: {name: tls-backend, namespace: bench}
spec: {ports: [{name: https, port: 443, targetPort: $BACKEND}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: tls-backend-1, namespace: bench, labels: {kubernetes.io/service-name: tls-backend}}
addressType: IPv4
ports: [{name: https, port: $BACKEND}]
endpoints: [{addresses: [127.0.0.1], conditions: {ready: true}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: bench}
spec:
  gatewayClassName: weir
  listeners: [{name: tls, protocol: TLS, port: 443, tls: {mode: Passthrough}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: bench, namespace: bench}
spec:
  parentRefs: [{name: gw}]
  hostnames: [bench.example]
  rules: [{backendRefs: [{name: tls-backend, port: 443}]}]
YAML

# nginx: stream, ssl_preread, a JSON line per connection (buffered, as its http log is run).
cat > "$work/nginx/nginx.conf" <<NGINX
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes 1;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 16384; }
stream {
  log_format json escape=json '{"time":"\$time_iso8601","client":"\$remote_addr:\$remote_port",'
    '"sni":"\$ssl_preread_server_name","upstream":"\$upstream_addr","status":\$status,'
    '"bytes_in":\$bytes_received,"bytes_out":\$bytes_sent,"duration":\$session_time}';
  access_log $work/nginx/access.log json buffer=64k flush=1s;
  map \$ssl_preread_server_name \$upstream { bench.example tls_backend; }
  upstream tls_backend { server 127.0.0.1:$BACKEND; }
  server {
    listen 127.0.0.1:$NGINX backlog=4096;
    ssl_preread on;
    proxy_pass \$upstream;
  }
}
NGINX

# HAProxy: mode tcp, the SNI from the ClientHello, a log line per connection.
cat > "$work/haproxy/haproxy.cfg" <<CFG
global
  nbthread 1
  maxconn 8000
  log stdout format raw local0
defaults
  mode tcp
  log global
  option tcplog
  timeout connect 3s
  timeout client 60s
  timeout server 60s
frontend passthrough
  bind 127.0.0.1:$HAPROXY
  tcp-request inspect-delay 5s
  tcp-request content accept if { req_ssl_hello_type 1 }
  use_backend tls_backend if { req.ssl_sni -i bench.example }
backend tls_backend
  server b1 127.0.0.1:$BACKEND
CFG

pids=()
cleanup() {
  kill "${pids[@]}" 2>/dev/null || true
  nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" -s stop 2>/dev/null || true
  nginx -c "$work/backend/nginx.conf" -p "$work/backend" -s stop 2>/dev/null || true
}
trap cleanup EXIT
taskset -c "$LOADGEN_CPU" nginx -c "$work/backend/nginx.conf" -p "$work/backend"
taskset -c "$PROXY_CPU" nginx -c "$work/nginx/nginx.conf" -p "$work/nginx"
taskset -c "$PROXY_CPU" haproxy -f "$work/haproxy/haproxy.cfg" > "$work/haproxy/access.log" 2>&1 &
HAPROXY_PID=$!; pids+=("$HAPROXY_PID")
taskset -c "$PROXY_CPU" "$root/target/release/weir-ingress" --config-dir "$work/config" \
  --listen 127.0.0.1:19446 --listen-tls 127.0.0.1:$WEIR --admin 127.0.0.1:$WEIR_ADMIN --workers 1 \
  > "$work/weir-access.log" 2> "$work/weir.err" &
WEIR_PID=$!; pids+=("$WEIR_PID")
sleep 1
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$WEIR_ADMIN/readyz" >/dev/null && break; sleep 0.1; done
NGINX_PID=$(cat "$work/nginx/nginx.pid")

# One load run against PORT, accounting PID's CPU: "rps cpu_us_per_request".
run() { # PORT PID MODE
  local port=$1 pid=$2 mode=$3 t0 t1 out ok secs=$DURATION
  t0=$(pid_ticks "$pid")
  if [ "$mode" = new ]; then
    # New connections: h2load runs again and again, each client sending NEW_REQS requests on
    # a connection of its own (requests/s here is bounded by h2load's start-up too; the CPU
    # per request is the proxy's own).
    out=$(timeout $((DURATION + 30)) taskset -c "$LOADGEN_CPU" bash -c '
      end=$((SECONDS + '"$DURATION"')); n=0
      while [ $SECONDS -lt $end ]; do
        h2load --h1 -t1 -c'"$CONNS"' -n$(('"$CONNS"' * '"$NEW_REQS"')) --connect-to=127.0.0.1:'"$port"' https://bench.example/ 2>/dev/null |
          awk "/^requests:/{print \$8}"
      done' | awk '{s+=$1} END {print s+0}')
    ok=$out
  else
    out=$(timeout $((DURATION + 30)) taskset -c "$LOADGEN_CPU" h2load --h1 -t1 -c"$CONNS" \
      -D"$DURATION" --connect-to="127.0.0.1:$port" https://bench.example/ 2>&1)
    ok=$(echo "$out" | awk '/^requests:/{print $8}')
  fi
  t1=$(pid_ticks "$pid")
  awk -v ok="$ok" -v s="$secs" -v d=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" \
    'BEGIN { if (ok == 0) { print "0 na"; exit } printf "%.0f %.1f\n", ok / s, d / hz * 1e6 / ok }'
}

results=$work/results.tsv
printf "rep\tmode\ttarget\trps\tcpu_us_per_req\n" > "$results"
for rep in $(seq "$REPS"); do
  for mode in keepalive new; do
    for target in "weir $WEIR $WEIR_PID" "nginx $NGINX $NGINX_PID" "haproxy $HAPROXY $HAPROXY_PID"; do
      read -r name port pid <<<"$target"
      read -r rps cpu <<<"$(run "$port" "$pid" "$mode")"
      printf "%s\t%s\t%s\t%s\t%s\n" "$rep" "$mode" "$name" "$rps" "$cpu" >> "$results"
      printf "rep %s %-9s %-8s rps=%-8s cpu_us/req=%s\n" "$rep" "$mode" "$name" "$rps" "$cpu" >&2
    done
  done
done

python3 - "$results" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
print(f"{'mode':<10} {'target':<8} {'req/s (median)':>15} {'min-max':>17} {'CPU µs/req':>11} {'Weir ahead':>11}")
for mode in ("keepalive", "new"):
    by = {t: [r for r in rows if r["mode"] == mode and r["target"] == t] for t in ("weir", "nginx", "haproxy")}
    for t, rs in by.items():
        rps = [float(r["rps"]) for r in rs]
        cpu = [float(r["cpu_us_per_req"]) for r in rs if r["cpu_us_per_req"] != "na"]
        ahead = ""
        if t != "weir":
            wins = sum(1 for w, o in zip(by["weir"], rs) if float(w["rps"]) > float(o["rps"]))
            ahead = f"{wins}/{len(rs)}"
        print(f"{mode:<10} {t:<8} {statistics.median(rps):>15.0f} {min(rps):>8.0f}-{max(rps):<8.0f} "
              f"{statistics.median(cpu) if cpu else float('nan'):>11.1f} {ahead:>11}")
PY
echo "log lines: weir $(grep -c tls-passthrough "$work/weir-access.log" || true), nginx $(wc -l < "$work/nginx/access.log" 2>/dev/null || echo 0), haproxy $(grep -c tls_backend "$work/haproxy/access.log" || true)"
