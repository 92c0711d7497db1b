#!/usr/bin/env bash
# bench/instructions.sh BINARY... — user-space instructions per proxied request of each
# weir-ingress binary (or `nginx`: the peer kit's nginx proxy), counted by callgrind:
# deterministic, so a change of 1 % shows, where requests/s on this shared machine move 10-25 %
# between runs of the same binary. It counts user-space work only (not the kernel's, not cache
# misses or atomic operations): check a change's real effect with bench/ab.sh as well.
#   bench/instructions.sh /tmp/weir-before target/release/weir-ingress nginx
# Each binary serves the peer kit's backend through one HTTPRoute; after 500 warm-up requests,
# N (default 4000) keep-alive GETs as wrk sends them (only a Host header) over 8 connections,
# in rounds of one per connection, are counted. Needs valgrind (apt-get install valgrind).
# Weir runs with --access-log off unless WEIR_FLAGS says otherwise (WEIR_FLAGS="" counts its
# defaults, the access log written to a file included, every thread's instructions counted).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/bench/lib.sh"
[ $# -gt 0 ] || { echo "usage: bench/instructions.sh BINARY..."; exit 2; }
command -v valgrind >/dev/null || { echo "valgrind is needed: apt-get install valgrind"; exit 1; }
n=${N:-4000}
work=${WEIR_BENCH_DIR:-/tmp/weir-bench}/instructions
mkdir -p "$work/config"
catch_all_objects > "$work/config/bench.yaml"
with_peers "backend"

# requests PORT N: N keep-alive GETs over 8 connections, in rounds as wrk's load keeps them:
# one request on every connection, then every answer read whole. Under callgrind the proxy is
# the slow side, so it finds all 8 waiting and handles them in one go, as it does under load.
requests() {
  python3 - "$1" "$2" <<'PY'
import socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % port
conns = [socket.create_connection(("127.0.0.1", port)) for _ in range(8)]
pending = [b""] * len(conns)

def answer(k):
    buf = pending[k]
    while True:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            head = buf[:end].decode()
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if len(buf) >= end + 4 + length:
                if not head.startswith("HTTP/1.1 200"):
                    sys.exit("unexpected answer: " + head.splitlines()[0])
                pending[k] = buf[end + 4 + length:]
                return
        data = conns[k].recv(65536)
        if not data:
            sys.exit("connection closed by the proxy")
        buf += data

for start in range(0, n, len(conns)):
    round = range(min(len(conns), n - start))
    for k in round:
        conns[k].sendall(request)
    for k in round:
        answer(k)
PY
}

# The nginx proxy as the peer kit configures it (one worker, upstream keep-alive), in the
# foreground without a master process so that callgrind sees the process that does the work.
nginx_config() {
  mkdir -p "$work/nginx"
  cat <<EOF
worker_processes 1;
daemon off;
master_process off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 1000; use epoll; }
EOF
  nginx_http "$work/nginx" 18095
}

for bin in "$@"; do
  out=$work/callgrind.out
  rm -f "$out"
  if [ "$bin" = nginx ]; then
    nginx_config > "$work/nginx.conf"
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out" \
      nginx -c "$work/nginx.conf" -p "$work/nginx" > "$work/nginx.log" 2>&1 &
    ready=http://127.0.0.1:18095/
  else
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out" \
      "$bin" --config-dir "$work/config" --listen 127.0.0.1:18095 --admin 127.0.0.1:19995 \
      --workers 1 --drain-timeout 1s ${WEIR_FLAGS---access-log off} > "$work/weir.log" 2>&1 &
    ready=http://127.0.0.1:19995/readyz
  fi
  vg=$!
  pids+=("$vg")
  for _ in $(seq 600); do curl -fs "$ready" >/dev/null 2>&1 && break; sleep 0.2; done
  requests 18095 500
  callgrind_control -i on "$vg" >/dev/null 2>&1
  requests 18095 "$n"
  callgrind_control -i off "$vg" >/dev/null 2>&1
  if [ "$bin" = nginx ]; then kill -QUIT "$vg"; else kill -TERM "$vg"; fi
  wait "$vg" || true
  total=$(callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/{gsub(",","",$1); print $1}')
  cp "$out" "$work/callgrind.$(basename "$bin").out"
  echo "$bin: $((total / n)) instructions per request (profile: $work/callgrind.$(basename "$bin").out)"
done
