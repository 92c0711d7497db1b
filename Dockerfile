# One image with every Weir binary: weir-ingress, weir-controller, weir-injector and
# weir-sidecar (the injected proxy and its iptables init container).
# Build: docker build -t ghcr.io/weir-dev/weir:0.1.0 .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p weir-ingress -p weir-controller -p weir-injector -p weir-sidecar --bins \
 && mkdir /out \
 && cp target/release/weir-ingress target/release/weir-controller target/release/weir-injector \
    target/release/weir-sidecar /out/

# Debian slim rather than distroless: the sidecar's init container runs iptables.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates iptables \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/ /usr/local/bin/
USER 65532:65532
ENTRYPOINT []
