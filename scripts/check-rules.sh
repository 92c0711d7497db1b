#!/usr/bin/env bash
# Checks the observability component's PrometheusRule with promtool: `spec` extracted into a
# plain rules file (the PrometheusRule stays the one source), then `promtool check rules` and
# every unit test in manifests/observability/tests/ (`promtool test rules`).
set -euo pipefail
cd "$(dirname "$0")/.."
src=manifests/observability
out=target/observability/rules
rm -rf "$out" && mkdir -p "$out"
# Everything below the top-level `spec:` line, two spaces less indented.
sed -n '/^spec:$/,$p' "$src/prometheusrule.yaml" | tail -n +2 | sed 's/^  //' > "$out/rules.yaml"
head -1 "$out/rules.yaml" | grep -qx 'groups:' || { echo "$src/prometheusrule.yaml: spec does not start with groups"; exit 1; }
cp "$src"/tests/*.test.yaml "$out/"
promtool check rules "$out/rules.yaml"
(cd "$out" && promtool test rules ./*.test.yaml)
