# syntax=docker/dockerfile:1
# One image, one multi-call binary: `sidereal operator | replication | shard | bot | up | crdgen`.
#   docker build -t sidereal:latest .
# e2e/kind.sh builds it, loads it into a kind cluster and installs the chart with it.

FROM rust:1.95-bookworm AS build
WORKDIR /src
# aws-lc-sys (rustls's default provider, pulled in by the WebSocket stack) builds C with cmake.
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends cmake && rm -rf /var/lib/apt/lists/*
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin sidereal \
 && cp target/release/sidereal /sidereal

# glibc and libgcc only, no shell, non-root (uid 65532, as the chart's securityContext expects).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /sidereal /usr/local/bin/sidereal
USER 65532:65532
# 7700 HTTP (login, control API, /metrics), 7701 shard link, 7702/udp and 7703 the game ports,
# 8080 operator metrics, 9100 shard metrics.
EXPOSE 7700 7701 7702/udp 7703 8080 9100
ENTRYPOINT ["/usr/local/bin/sidereal"]
