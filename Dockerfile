# One image with every Weir binary: weir-ingress, weir-controller, weir-injector and
# weir-sidecar (the injected proxy and its iptables init container), stripped.
# Build: scripts/image.sh (docker or podman; also where these base images cannot be pulled),
# or `docker build -t ghcr.io/weir-dev/weir:0.1.0 .`
#
# BASE: the runtime stage's base, with glibc, iptables and the CA certificates (`debian-base`
# below, or scripts/image.sh's weir-base:bookworm bootstrapped with mmdebstrap).
# BINARIES: `source` builds them here; `host` takes them stripped from the context's bin/.
ARG BASE=debian-base
ARG BINARIES=source

FROM docker.io/library/rust:1-bookworm AS source
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p weir-ingress -p weir-controller -p weir-injector -p weir-sidecar --bins \
 && mkdir -p /out/bin /out/debug \
 && for b in weir-ingress weir-controller weir-injector weir-sidecar; do \
      objcopy --only-keep-debug target/release/$b /out/debug/$b.debug \
   && objcopy --strip-all --add-gnu-debuglink=/out/debug/$b.debug target/release/$b /out/bin/$b; \
    done

FROM scratch AS host
COPY bin/ /out/bin/

FROM ${BINARIES} AS binaries

FROM docker.io/library/debian:bookworm-slim AS debian-base
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates iptables \
 && rm -rf /var/lib/apt/lists/*

FROM ${BASE}
COPY --from=binaries /out/bin/ /usr/local/bin/
# The controller, the ingress and the injector run as 65532; the injected sidecar as its proxy
# user (1337) and its init container as root with NET_ADMIN and NET_RAW alone.
USER 65532:65532
ENTRYPOINT []
