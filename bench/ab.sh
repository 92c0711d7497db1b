#!/usr/bin/env bash
# bench/ab.sh OLD NEW — two weir-ingress binaries side by side with nginx, in one run, to
# measure a change to the request path (build each commit, copy its binary aside, pass both).
# Same setup as run.sh: each proxy alone on CPU 1 with one worker, backend and wrk on CPU 0;
# both with their access log off, so that the request path's own cost shows.
#   REPS=3 DURATION=5 bench/ab.sh /tmp/weir-before target/release/weir-ingress
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/bench/lib.sh"
old=${1:?usage: bench/ab.sh OLD-BINARY NEW-BINARY}
new=${2:?usage: bench/ab.sh OLD-BINARY NEW-BINARY}
work=${WEIR_BENCH_DIR:-/tmp/weir-bench}/ab
mkdir -p "$work/config"
catch_all_objects > "$work/config/bench.yaml"

bash "$kit/setup.sh" >/dev/null
with_peers "backend nginx-proxy"

start_weir "$old" "$work/config" 18087 19907 --access-log off; old_pid=$WEIR_PID
start_weir "$new" "$work/config" 18085 19905 --access-log off; new_pid=$WEIR_PID
"$kit/scripts/compare.sh" -r "${REPS:-3}" \
  nginx=http://127.0.0.1:18081/,pid=nginx-proxy \
  old=http://127.0.0.1:18087/,pid="$old_pid" \
  new=http://127.0.0.1:18085/,pid="$new_pid"
