#!/usr/bin/env bash
# Runs Weir's whole test suite on a fresh Debian machine with only the Rust toolchain:
# installs what the tests need, then formatting, clippy, and every test (unit and end-to-end).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
# One clean build: incremental state only costs disk here.
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}

need_apt=()
command -v curl >/dev/null || need_apt+=(curl)
# The rate-limit tests start a real redis-server on loopback, and a Redis Cluster of six built
# with redis-cli (Debian's redis-server package pulls in redis-tools, which has redis-cli).
command -v redis-server >/dev/null || need_apt+=(redis-server)
command -v redis-cli >/dev/null || need_apt+=(redis-tools)
# The manifests are built with kubectl's kustomize and checked against the Kubernetes schemas
# with kubernetes-validate (PyPI).
command -v kubectl >/dev/null || need_apt+=(kubernetes-client)
# The transparent-mode test builds network namespaces (ip) and lets `weir-sidecar init`
# install iptables rules inside them.
command -v ip >/dev/null || need_apt+=(iproute2)
# The alerts are checked and unit-tested with promtool, and the observability test scrapes
# the real processes with a real Prometheus (Debian's package has both).
command -v promtool >/dev/null || need_apt+=(prometheus)
command -v iptables >/dev/null || need_apt+=(iptables)
python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3 python3-venv)
# The image tier builds the container image with podman (runc) on a Debian base bootstrapped
# by mmdebstrap, unless a Docker engine runs here.
if ! { command -v docker >/dev/null && docker info >/dev/null 2>&1; }; then
  command -v podman >/dev/null || need_apt+=(podman)
  command -v runc >/dev/null || need_apt+=(runc)
fi
command -v mmdebstrap >/dev/null || need_apt+=(mmdebstrap)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "==> installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> fuzz targets still compile (run them with cargo +nightly fuzz: docs/security.md)"
# Each fuzz crate is a workspace of its own. Checked with the stable toolchain, the only one a
# fresh machine has, at the workspace's dependency versions and in its target directory, so
# that only libFuzzer and the targets themselves are new work after clippy.
for fuzz in injector/fuzz proxy/fuzz; do
  [ -f "$fuzz/Cargo.lock" ] || cp Cargo.lock "$fuzz/Cargo.lock"
  cargo check --manifest-path "$fuzz/Cargo.toml" --target-dir target --bins
done
echo "==> one crypto provider: nothing may depend on ring"
if [ -n "$(cargo tree --workspace --target all -i ring 2>/dev/null)" ]; then
  cargo tree --workspace --target all -i ring; echo "ring is in the dependency graph"; exit 1
fi
echo "==> manifests: kustomize build, then every object against the Kubernetes 1.33 schemas"
mkdir -p target
kubectl kustomize manifests/ > target/manifests.yaml
if [ ! -x target/validate-venv/bin/kubernetes-validate ]; then
  python3 -m venv target/validate-venv
  target/validate-venv/bin/pip install -q kubernetes-validate
fi
target/validate-venv/bin/kubernetes-validate --strict --quiet -k 1.33.0 target/manifests.yaml
echo "==> the observability component: it builds on the install, and its rules pass promtool"
kubectl kustomize examples/observability > target/manifests-observability.yaml
scripts/check-rules.sh
echo "==> build (the end-to-end tests start these binaries)"
# Bins and tests in one build, so the dependencies are compiled once with the features the tests
# unify in, and the test run below builds nothing again.
cargo build --workspace --bins --tests --locked
echo "==> the container images, from these binaries (scripts/image.sh)"
# tests/tests/image.rs runs them as the manifests and the injector say. The tier is skipped,
# with this message, only where no container can run at all; otherwise a missing image fails.
engine_runs() { # what the engine answers when the base image is asked to run a program
  # shellcheck disable=SC2046 # the engine's command and flags are words
  (set -a; . target/image/run.env; set +a
   $WEIR_TEST_ENGINE run --rm $WEIR_TEST_RUN_FLAGS --entrypoint /usr/sbin/xtables-nft-multi \
     "weir-base:$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")" iptables --version)
}
for engine in podman docker; do  # what an earlier, killed run left
  command -v $engine >/dev/null || continue
  $engine ps -aq --filter label=dev.weir.test 2>/dev/null | xargs -r $engine rm -f >/dev/null 2>&1 || true
done
if ! scripts/image.sh --binaries target/debug --tag weir:test; then
  if podman info >/dev/null 2>&1 || docker info >/dev/null 2>&1; then
    echo "scripts/image.sh failed"; exit 1
  fi
  echo "==> SKIPPING the image tier: no container engine works on this machine"
elif ! probe=$(engine_runs 2>&1); then
  echo "==> SKIPPING the image tier: this machine cannot run containers: $probe"
else
  set -a; . target/image/run.env; set +a
  export WEIR_TEST_IMAGE_REQUIRED=1
fi
echo "==> tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
