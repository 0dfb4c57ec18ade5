# syntax=docker/dockerfile:1
# One image, one multi-call binary: `sidereal operator | replication | shard | bot | up | crdgen`.
#   docker build -t sidereal:latest .
# e2e/kind.sh builds it, loads it into a kind cluster and installs the chart with it.
#
# Built with no registry (e2e/scripts/build-images.sh, for the local real node): the base
# images are build arguments, and BINARY=prebuilt takes a binary that `cargo build --locked
# --bin sidereal` made on a Debian 12 host (context: a folder holding `sidereal`) instead of
# compiling it in the `build` stage. The `runtime` stage, what users run, is the same either way.
ARG BUILD_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot
ARG BINARY=build

FROM ${BUILD_IMAGE} AS build
WORKDIR /src
# aws-lc-sys (rustls's default provider, pulled in by the WebSocket stack) builds C with cmake.
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends cmake && rm -rf /var/lib/apt/lists/*
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin sidereal \
 && cp target/release/sidereal /sidereal

FROM scratch AS prebuilt
COPY sidereal /sidereal

FROM ${BINARY} AS binary

# glibc and libgcc only, no shell, non-root (uid 65532, as the chart's securityContext expects).
FROM ${RUNTIME_IMAGE} AS runtime
COPY --from=binary /sidereal /usr/local/bin/sidereal
USER 65532:65532
# 7700 HTTP (login, control API, /metrics), 7701 shard link, 7702/udp and 7703 the game ports,
# 8080 operator metrics, 9100 shard metrics.
EXPOSE 7700 7701 7702/udp 7703 8080 9100
ENTRYPOINT ["/usr/local/bin/sidereal"]
