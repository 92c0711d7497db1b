#!/usr/bin/env bash
# bench/injector.sh — weir-injector answering AdmissionReviews over HTTPS, as fast as wrk can
# send them (a Deployment's pod, the review in injector/tests/reviews/deployment.json), and at
# a steady ~1,000 reviews/s (5 connections, each waiting 4 ms between reviews). Target: 1,000
# reviews/s with p99 under 10 ms. No peer does this job, so there is nothing to put beside it.
#   SECONDS_PER_RUN=10 bench/injector.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
run=${SECONDS_PER_RUN:-10}
work=${WEIR_BENCH_DIR:-/tmp/weir-bench-injector}
rm -rf "$work" && mkdir -p "$work"
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
(cd "$root" && cargo build --release -q -p weir-injector)
bin=$root/target/release
review=$root/injector/tests/reviews/deployment.json

# A serving certificate from a throwaway CA.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=bench-ca \
  -keyout "$work/ca.key" -out "$work/ca.crt" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=weir-injector \
  -addext subjectAltName=DNS:weir-injector.weir-system.svc,IP:127.0.0.1 \
  -keyout "$work/tls.key" -out "$work/tls.csr" 2>/dev/null
openssl x509 -req -in "$work/tls.csr" -CA "$work/ca.crt" -CAkey "$work/ca.key" -CAcreateserial -days 1 \
  -copy_extensions copy -out "$work/tls.crt" 2>/dev/null

taskset -c 1 "$bin/weir-injector" --listen 127.0.0.1:18470 --tls-cert "$work/tls.crt" --tls-key "$work/tls.key" \
  2>"$work/injector.log" & pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -skf https://127.0.0.1:18470/healthz >/dev/null && break; sleep 0.1; done

cat > "$work/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("$review", "r"); wrk.body = f:read("*a"); f:close()
LUA
cpu() { awk '{print $14 + $15}' /proc/$pid/stat; }
echo "== as fast as it goes (wrk, HTTP/1.1 keep-alive, 8 connections, injector on one core)"
before=$(cpu)
taskset -c 0 wrk -t1 -c8 -d"${run}s" --latency -s "$work/post.lua" https://127.0.0.1:18470/inject > "$work/wrk.txt"
after=$(cpu)
grep -E "Requests/sec|Latency  |50%|90%|99%|Non-2xx|Socket" "$work/wrk.txt"
requests=$(awk '/requests in/ {print $1}' "$work/wrk.txt")
echo "CPU per review: $(awk -v t=$((after - before)) -v n="$requests" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.1f µs", t / hz / n * 1e6}')"

echo "== a steady ~1,000 reviews/s for ${run}s (wrk, 5 connections, 4 ms between reviews on each)"
{ cat "$work/post.lua"; echo 'function delay() return 4 end'; } > "$work/paced.lua"
taskset -c 0 wrk -t1 -c5 -d"${run}s" --latency -s "$work/paced.lua" https://127.0.0.1:18470/inject > "$work/paced.txt"
grep -E "Requests/sec|Latency  |50%|90%|99%|Non-2xx|Socket" "$work/paced.txt"
echo "RSS after: $(awk '/VmRSS/ {print $2, $3}' /proc/$pid/status)"
