#!/usr/bin/env bash
# Builds the container image `weir:dev` (every Weir binary: weir-ingress, weir-controller,
# weir-injector, weir-sidecar) with docker or podman, whichever can run here.
#
#   scripts/image.sh                        release binaries, the image weir:dev
#   scripts/image.sh --tag weir:0.1.0       another name
#   scripts/image.sh --binaries target/debug   binaries already built (the test suite's)
#
# Two ways to the same runtime stage of the Dockerfile:
# - where the registry's base images can be pulled (docker.io/library/rust and debian), the
#   Dockerfile as it is: the binaries are built inside the image build, the runtime stage is
#   debian:bookworm-slim with iptables and the CA certificates;
# - where they cannot (these CI machines), the runtime stage's base is bootstrapped from the
#   Debian mirror apt already uses, with mmdebstrap: glibc, iptables and the CA certificates
#   and nothing else (no shell, no package manager), imported as `weir-base:bookworm`; the
#   binaries are built on this machine with cargo and stripped, their debug info kept in
#   target/image/debug (each binary names its file in a .gnu_debuglink section).
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
    -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "scripts/image.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
bins=(weir-ingress weir-controller weir-injector weir-sidecar)
base_image=weir-base:bookworm

engine=()
run_flags=()
image_engine() {
  local name=${WEIR_IMAGE_ENGINE:-}
  if [ -z "$name" ]; then
    if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
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
    run_flags=(--ulimit "nofile=$(ulimit -Hn):$(ulimit -Hn)" --ulimit nproc=4096:4096)
  fi
}
image_engine
echo "==> engine: ${engine[*]}"

# The base: Debian's packages unpacked, their maintainer scripts' work done by hand (the CA
# bundle, iptables' default alternative, the users). Rebuilt when this recipe changes.
recipe=$(sed -n '/^base_recipe()/,/^}/p' "$0" | sha256sum | cut -c1-16)
base_recipe() {
  command -v mmdebstrap >/dev/null || {
    echo "scripts/image.sh: mmdebstrap is missing (on Debian: apt-get install mmdebstrap)" >&2
    return 1
  }
  local dir
  dir=$(mktemp -d)
  # shellcheck disable=SC2016 # the hooks' $1 is mmdebstrap's: the new root
  mmdebstrap --variant=extract --quiet \
    --include=libc6,libgcc-s1,iptables,ca-certificates \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/lintian/*' \
    --dpkgopt='path-exclude=/usr/lib/x86_64-linux-gnu/gconv/*' \
    --extract-hook='cat "$1"/usr/share/ca-certificates/mozilla/*.crt > "$1/etc/ssl/certs/ca-certificates.crt"' \
    --extract-hook='for t in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do ln -sf "${t%%-*}-nft${t#*tables}" "$1/usr/sbin/$t"; done' \
    --extract-hook='printf "root:x:0:0:root:/root:/sbin/nologin\nweir-proxy:x:1337:1337:the sidecar:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:weir:/nonexistent:/sbin/nologin\n" > "$1/etc/passwd"' \
    --extract-hook='printf "root:x:0:\nweir-proxy:x:1337:\nnonroot:x:65532:\n" > "$1/etc/group"' \
    --extract-hook='printf "passwd: files\ngroup: files\nhosts: files dns\n" > "$1/etc/nsswitch.conf"' \
    --extract-hook='chmod 1777 "$1/tmp"' \
    bookworm "$dir/root"
  # What apt left for itself (its partial/ directories are _apt's): no apt runs in the image.
  rm -rf "$dir/root/var/cache/apt" "$dir/root/var/lib/apt" "$dir/root/var/log/apt"
  tar -C "$dir/root" --numeric-owner -cf "$dir/base.tar" .
  "${engine[@]}" import -q --change 'USER 65532:65532' \
    --change "LABEL dev.weir.base-recipe=$recipe" "$dir/base.tar" "$base_image" >/dev/null
  rm -rf "$dir"
}

source=${WEIR_IMAGE_SOURCE:-}
if [ -z "$source" ]; then
  if [ -n "$binaries" ]; then
    source=local
  elif "${engine[@]}" pull -q docker.io/library/debian:bookworm-slim >/dev/null 2>&1 &&
    "${engine[@]}" pull -q docker.io/library/rust:1-bookworm >/dev/null 2>&1; then
    source=registry
  else
    source=local
    echo "==> the registry's base images cannot be pulled: building from this machine"
  fi
fi

if [ "$source" = registry ]; then
  [ -z "$binaries" ] || { echo "scripts/image.sh: --binaries needs the local way" >&2; exit 2; }
  "${engine[@]}" build -t "$tag" -f "$root/Dockerfile" "$root"
else
  have=$("${engine[@]}" image inspect --format '{{ index .Config.Labels "dev.weir.base-recipe" }}' \
    "$base_image" 2>/dev/null || true)
  if [ "$have" != "$recipe" ]; then
    echo "==> bootstrapping the base $base_image with mmdebstrap"
    base_recipe
  fi

  if [ -z "$binaries" ]; then
    echo "==> cargo build --release"
    (cd "$root" && cargo build --release --locked -p weir-ingress -p weir-controller \
      -p weir-injector -p weir-sidecar --bins)
    binaries=$root/target/release
  fi
  context=$root/target/image/context
  debug=$root/target/image/debug
  rm -rf "$context" && mkdir -p "$context/bin" "$debug"
  for b in "${bins[@]}"; do
    [ -x "$binaries/$b" ] || { echo "scripts/image.sh: $binaries/$b is missing" >&2; exit 1; }
    objcopy --only-keep-debug "$binaries/$b" "$debug/$b.debug"
    objcopy --strip-all --add-gnu-debuglink="$debug/$b.debug" "$binaries/$b" "$context/bin/$b"
  done
  cp "$root/Dockerfile" "$context/Dockerfile"
  "${engine[@]}" build -q -t "$tag" --build-arg BASE="$base_image" --build-arg BINARIES=host \
    "$context" >/dev/null
fi
size=$("${engine[@]}" image inspect --format '{{ .Size }}' "$tag")
echo "==> built $tag ($source): $((size / 1000000)) MB"
mkdir -p "$root/target/image"
printf 'WEIR_TEST_IMAGE=%q\nWEIR_TEST_ENGINE=%q\nWEIR_TEST_RUN_FLAGS=%q\n' \
  "$tag" "${engine[*]}" "${run_flags[*]}" > "$root/target/image/run.env"
