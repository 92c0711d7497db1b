#!/usr/bin/env bash
# Builds Weir, starts two demo backends and weir-ingress on this directory's objects, and
# prints requests to try. Ctrl-C stops everything.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
echo "==> building weir-ingress and the demo backend (first build takes a few minutes)"
cargo build --release -q -p weir-ingress -p weir-e2e --bins
bin=$root/target/release
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM
"$bin/weir-echo" --listen 127.0.0.1:18001 --name shop-v1 >/dev/null & pids+=($!)
"$bin/weir-echo" --listen 127.0.0.1:18002 --name shop-canary >/dev/null & pids+=($!)
listen=${WEIR_LISTEN:-127.0.0.1:8080}
admin=${WEIR_ADMIN:-127.0.0.1:9901}
"$bin/weir-ingress" --config-dir "$here" --listen "$listen" --admin "$admin" & pids+=($!)
for _ in $(seq 50); do curl -fs "http://$admin/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
cat <<TRY

Weir is serving $here on http://$listen (admin on http://$admin). Try:

  curl -s -H 'Host: shop.example.com' http://$listen/hello            # 90% shop-v1, 10% shop-canary
  curl -s -H 'Host: shop.example.com' -H 'x-canary: always' http://$listen/   # always the canary
  curl -si -H 'Host: shop.example.com' http://$listen/old-shop         # 301 redirect
  curl -s -H 'Host: api.example.com' -H 'X-API-Key: demo-key-1' http://$listen/api/orders
                                                                       # the Ingress route (security.yaml: API key,
                                                                       # RateLimit-* headers; the 4th call in a minute gets 429)
  curl -si -H 'Host: api.example.com' http://$listen/api/orders        # 401 without a key
  curl -si http://$listen/nothing-here                                 # 404, x-weir-error: no-route
  curl -si -H 'Host: shop.example.com' http://$listen/sleep/2500       # 504 after 1.5s: policy.yaml's perTryTimeout
                                                                       # (10% go to the canary: no policy, 200)
  curl -s http://$admin/config                                         # the active snapshot
  curl -s http://$admin/metrics | grep -E 'weir_requests_total|weir_retries_total'

Edit any YAML file here and the change is live within a second. Ctrl-C stops everything.
TRY
wait
