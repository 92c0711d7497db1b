# Weir's images, stripped binaries on a base of glibc, iptables (nft) and the CA certificates
# (scripts/image-base.sh: no shell, no package manager):
# - the default target: every binary (weir-ingress, weir-controller, weir-injector,
#   weir-sidecar, and weirctl to ask them), for the Deployments;
# - `--target sidecar`: weir-sidecar alone, what the injector adds to every meshed pod (the
#   same layers as the first two of the default target).
# Build: scripts/image.sh (docker or podman; also where these base images cannot be pulled),
# or `docker build -t ghcr.io/weir-dev/weir:0.1.0 .` and
# `docker build --target sidecar -t ghcr.io/weir-dev/weir-sidecar:0.1.0 .`; the debug info:
# `docker build --target debug --output target/image/debug .`
#
# BASE: the runtime base (`debian-base` below, or scripts/image.sh's weir-base:SUITE, made by
# the same script on the host). BINARIES: `source` builds them here; `host` takes them,
# stripped, from the build context's bin/.
ARG BASE=debian-base
ARG BINARIES=source

FROM docker.io/library/rust:1-bookworm AS source
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p weir-ingress -p weir-controller -p weir-injector -p weir-sidecar -p weirctl --bins \
 && mkdir -p /out/bin /out/debug \
 && for b in weir-ingress weir-controller weir-injector weir-sidecar weirctl; do \
      objcopy --only-keep-debug target/release/$b /out/debug/$b.debug \
   && objcopy --strip-all --add-gnu-debuglink=/out/debug/$b.debug target/release/$b /out/bin/$b; \
    done

FROM scratch AS debug
COPY --from=source /out/debug/ /

FROM scratch AS host
COPY bin/ /out/bin/

FROM ${BINARIES} AS binaries

FROM docker.io/library/debian:bookworm-slim AS base-rootfs
RUN apt-get update \
 && apt-get install -y --no-install-recommends mmdebstrap \
 && rm -rf /var/lib/apt/lists/*
COPY scripts/image-base.sh /usr/local/bin/image-base.sh
RUN image-base.sh /rootfs

FROM scratch AS debian-base
COPY --from=base-rootfs /rootfs/ /
ENV PATH=/usr/local/bin:/usr/sbin:/usr/bin

FROM ${BASE} AS sidecar
COPY --from=binaries /out/bin/weir-sidecar /usr/local/bin/
# The controller, the ingress and the injector run as 65532; the injected sidecar as its proxy
# user (1337) and its init container as root with NET_ADMIN and NET_RAW alone.
USER 65532:65532
ENTRYPOINT []

FROM sidecar
COPY --from=binaries /out/bin/weir-ingress /out/bin/weir-controller /out/bin/weir-injector /out/bin/weirctl /usr/local/bin/
