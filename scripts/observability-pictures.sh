#!/usr/bin/env bash
# Renders the pictures of docs/observability.md: runs the observability test (real processes,
# a real Prometheus) with a few minutes of traffic, and draws every dashboard panel from that
# Prometheus with matplotlib into docs/observability/. Needs prometheus (apt) and the binaries
# built (cargo build --workspace --bins).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/pictures-venv
if [ ! -x "$venv/bin/python3" ] || ! "$venv/bin/python3" -c 'import matplotlib' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q matplotlib
fi
PATH="$PWD/$venv/bin:$PATH" WEIR_OBSERVABILITY_PICTURES="$PWD/docs/observability" \
  cargo test -p weir-e2e --test observability -- --nocapture
