#!/usr/bin/env bash
# Builds Weir's container images with docker or podman, whichever can run here: `weir:dev`
# (every binary: weir-ingress, weir-controller, weir-injector, weir-sidecar, weirctl) and
# `weir-sidecar:dev` (weir-sidecar alone, what the injector adds to pods; the same base and
# sidecar layers).
#
#   scripts/image.sh                          release binaries, weir:dev and weir-sidecar:dev
#   scripts/image.sh --tag reg.example/weir:0.1.0   and reg.example/weir-sidecar:0.1.0
#   scripts/image.sh --binaries target/debug  binaries already built (the test suite's)
#
# Two ways to the same runtime stage of the Dockerfile:
# - where the registry's base images can be pulled (docker.io/library/rust and debian), the
#   Dockerfile as it is: the binaries are built inside the image build, the runtime stage is
#   debian:bookworm-slim with iptables and the CA certificates;
# - where they cannot (these CI machines), the runtime stage's base is bootstrapped from the
#   Debian mirror apt already uses, with mmdebstrap: glibc, iptables and the CA certificates
#   and nothing else (no shell, no package manager), imported as `weir-base:bookworm`; the
#   binaries are built on this machine with cargo and stripped, their debug info kept in
#   target/image/debug/.build-id/ (gdb and perf look there by each binary's build id: `set
#   debug-file-directory target/image/debug`, `perf buildid-cache -a`).
# WEIR_IMAGE_SOURCE=registry|local forces one way; WEIR_IMAGE_ENGINE=docker|podman one engine.
#
# Podman runs as root here with runc and the cgroupfs manager where systemd does not run the
# machine (crun refuses the hybrid cgroup layout of these machines), and `podman run` needs
# ulimits within the machine's hard limits. The engine's command and those run flags are
# written to target/image/run.env (WEIR_TEST_IMAGE, WEIR_TEST_ENGINE, WEIR_TEST_RUN_FLAGS),
# for the tests and scripts that run the image afterwards.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tag=weir:dev
binaries=
while [ $# -gt 0 ]; do
  case $1 in
    --tag) tag=$2; shift 2 ;;
    --binaries) binaries=$(cd "$2" && pwd); shift 2 ;;
    -h|--help) sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "scripts/image.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
bins=(weir-ingress weir-controller weir-injector weir-sidecar weirctl)
# NAME:VERSION → NAME-sidecar:VERSION
name=${tag%:*}
[ "$name" != "$tag" ] && version=${tag##*:} || version=latest
sidecar_tag=$name-sidecar:$version

engine=()
ulimits=()
run_flags=()
image_engine() {
  local name=${WEIR_IMAGE_ENGINE:-} nproc
  if [ -z "$name" ]; then
    # (podman's docker shim is podman, and needs its flags)
    if command -v docker >/dev/null && docker info >/dev/null 2>&1 &&
      ! docker --version 2>/dev/null | grep -qi podman; then
      name=docker
    elif command -v podman >/dev/null; then
      name=podman
    else
      echo "scripts/image.sh: neither a Docker engine nor podman can run here" \
        "(on Debian: apt-get install podman runc)" >&2
      return 1
    fi
  fi
  engine=("$name")
  if [ "$name" = podman ]; then
    command -v runc >/dev/null && engine+=(--runtime runc)
    [ -d /run/systemd/system ] || engine+=(--cgroup-manager cgroupfs)
    # Podman's default ulimits can exceed the hard ones; a container may not raise them.
    nproc=$(ulimit -Hu)
    [ "$nproc" = unlimited ] || [ "$nproc" -gt 4096 ] && nproc=4096
    ulimits=(--ulimit "nofile=$(ulimit -Hn):$(ulimit -Hn)" --ulimit "nproc=$nproc:$nproc")
    # As Kubernetes' readOnlyRootFilesystem: no writable /tmp or /run unless a volume says so.
    run_flags=("${ulimits[@]}" --read-only-tmpfs=false)
  fi
}
image_engine
echo "==> engine: ${engine[*]}"

# The base (scripts/image-base.sh), imported as an image; made again when that script changes,
# and at least every WEIR_BASE_MAX_AGE_DAYS (7) days, for the archive's security updates.
suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
base_image=weir-base:$suite
recipe=$(cat "$root/scripts/image-base.sh" | sha256sum | cut -c1-16)
base_recipe() {
  local dir
  dir=$(mktemp -d)
  trap 'rm -rf "$dir"' RETURN
  "$root/scripts/image-base.sh" "$dir/root"
  tar -C "$dir/root" --numeric-owner -cf "$dir/base.tar" .
  "${engine[@]}" import -q --change 'USER 65532:65532' \
    --change 'ENV PATH=/usr/local/bin:/usr/sbin:/usr/bin' \
    --change "LABEL dev.weir.base-recipe=$recipe" \
    --change "LABEL dev.weir.base-built=$(date +%s)" "$dir/base.tar" "$base_image" >/dev/null
}

source=${WEIR_IMAGE_SOURCE:-}
if [ -z "$source" ]; then
  if [ -n "$binaries" ]; then
    source=local
  elif timeout 30 "${engine[@]}" manifest inspect docker.io/library/debian:bookworm-slim \
    >/dev/null 2>&1 && timeout 30 "${engine[@]}" manifest inspect \
    docker.io/library/rust:1-bookworm >/dev/null 2>&1; then
    source=registry
  else
    source=local
    echo "==> the registry's base images cannot be pulled: building from this machine"
  fi
fi

if [ "$source" = registry ]; then
  [ -z "$binaries" ] || { echo "scripts/image.sh: --binaries needs the local way" >&2; exit 2; }
  "${engine[@]}" build "${ulimits[@]}" --target sidecar -t "$sidecar_tag" "$root"
  "${engine[@]}" build "${ulimits[@]}" -t "$tag" "$root"
else
  label() {
    "${engine[@]}" image inspect --format "{{ index .Config.Labels \"$1\" }}" "$base_image" \
      2>/dev/null || true
  }
  built=$(label dev.weir.base-built)
  if [ "$(label dev.weir.base-recipe)" != "$recipe" ] ||
    [ $(($(date +%s) - ${built:-0})) -gt $((${WEIR_BASE_MAX_AGE_DAYS:-7} * 86400)) ]; then
    echo "==> bootstrapping the base $base_image with mmdebstrap (scripts/image-base.sh)"
    base_recipe
  fi

  if [ -z "$binaries" ]; then
    echo "==> cargo build --release"
    (cd "$root" && cargo build --release --locked -p weir-ingress -p weir-controller \
      -p weir-injector -p weir-sidecar -p weirctl --bins)
    binaries=$root/target/release
  fi
  context=$root/target/image/context
  debug=$root/target/image/debug
  rm -rf "$context" && mkdir -p "$context/bin" "$debug"
  for b in "${bins[@]}"; do
    [ -x "$binaries/$b" ] || { echo "scripts/image.sh: $binaries/$b is missing" >&2; exit 1; }
    id=$(readelf -n "$binaries/$b" | awk '/Build ID/ { print $3 }')
    [ -n "$id" ] || { echo "scripts/image.sh: $b has no build id" >&2; exit 1; }
    mkdir -p "$debug/.build-id/${id:0:2}"
    objcopy --only-keep-debug "$binaries/$b" "$debug/.build-id/${id:0:2}/${id:2}.debug"
    objcopy --strip-all "$binaries/$b" "$context/bin/$b"
  done
  cp "$root/Dockerfile" "$context/Dockerfile"
  for target in sidecar ""; do
    out=$tag
    [ -z "$target" ] || out=$sidecar_tag
    "${engine[@]}" build -q ${target:+--target "$target"} -t "$out" \
      --build-arg BASE="$base_image" --build-arg BINARIES=host "$context" >/dev/null
  done
fi
size() { "${engine[@]}" image inspect --format '{{ .Size }}' "$1"; }
echo "==> built $tag: $(($(size "$tag") / 1000000)) MB," \
  "$sidecar_tag: $(($(size "$sidecar_tag") / 1000000)) MB ($source)"
mkdir -p "$root/target/image"
printf 'WEIR_TEST_IMAGE=%q\nWEIR_TEST_SIDECAR_IMAGE=%q\nWEIR_TEST_ENGINE=%q\nWEIR_TEST_RUN_FLAGS=%q\n' \
  "$tag" "$sidecar_tag" "${engine[*]}" "${run_flags[*]}" > "$root/target/image/run.env"
