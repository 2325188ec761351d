# syntax=docker/dockerfile:1
# The Strata broker image: `strata serve` as user 10001, data in /var/lib/strata.
# linux/amd64 and linux/arm64 from one build, without emulating the Rust build:
#   docker buildx build --platform linux/amd64,linux/arm64 -t REPO:TAG --push .
# or one platform into the local engine:
#   docker build -t strata:0.1.0 .
#
# Build stage: runs on the builder's own platform ($BUILDPLATFORM) and cross-compiles
# for $TARGETARCH with Debian's cross gcc (the codecs lz4 and zstd and aws-lc compile C
# for the target; it also links). protoc runs on the builder (etcd-client's
# build script). /etc/strata-target passes the target's Rust triple and gcc prefix on to
# the cargo build.
FROM --platform=$BUILDPLATFORM rust:1.95-slim-bookworm AS build
ARG TARGETARCH
RUN set -eu; \
    case "$TARGETARCH" in \
      amd64) triple=x86_64-unknown-linux-gnu; gnu=x86_64-linux-gnu; gcc_arch=x86-64 ;; \
      arm64) triple=aarch64-unknown-linux-gnu; gnu=aarch64-linux-gnu; gcc_arch=aarch64 ;; \
      *) echo "unsupported TARGETARCH '$TARGETARCH' (amd64 or arm64)" >&2; exit 1 ;; \
    esac; \
    packages="protobuf-compiler libprotobuf-dev"; \
    if [ "$(dpkg --print-architecture)" != "$TARGETARCH" ]; then \
      packages="$packages gcc-$gcc_arch-linux-gnu libc6-dev-$TARGETARCH-cross"; \
    fi; \
    apt-get update; \
    apt-get install -y --no-install-recommends $packages; \
    rm -rf /var/lib/apt/lists/*; \
    rustup target add "$triple"; \
    printf 'TRIPLE=%s\nGNU=%s\n' "$triple" "$gnu" > /etc/strata-target
WORKDIR /src
COPY . .
# The cc crate reads CC_<triple>, cargo the linker of CARGO_TARGET_<TRIPLE>_LINKER; on the
# builder's own architecture the native gcc is the same as <gnu>-gcc.
# The registry cache is one for every target: a multi-platform build runs this step once
# per platform at the same time, so `sharing=locked` makes the second wait for the first
# (the two cargo builds run one after the other) rather than both writing the same
# download and extraction directories. target/ is one cache per platform (its id).
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,id=strata-target-$TARGETARCH \
    set -eu; \
    . /etc/strata-target; \
    upper=$(echo "$TRIPLE" | tr 'a-z-' 'A-Z_'); \
    export "CARGO_TARGET_${upper}_LINKER=$GNU-gcc" "CC_$(echo "$TRIPLE" | tr - _)=$GNU-gcc" \
      "AR_$(echo "$TRIPLE" | tr - _)=$GNU-ar"; \
    cargo build --locked --release -p strata-broker --target "$TRIPLE"; \
    install -m 0755 "target/$TRIPLE/release/strata" /usr/local/bin/strata

# Runtime stage, one per target platform: Debian slim with CA certificates (HTTPS to S3
# and STS) and bash (the Helm chart's start and preStop scripts).
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 strata \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/strata --shell /usr/sbin/nologin strata \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/strata
COPY --from=build /usr/local/bin/strata /usr/local/bin/strata
USER 10001:10001
WORKDIR /var/lib/strata
ENV STRATA_DATA_DIR=/var/lib/strata
VOLUME ["/var/lib/strata"]
# Kafka, replication (gRPC), admin API (gRPC), HTTP (/metrics, /healthz, /readyz).
EXPOSE 9092 9093 9094 9644
ENTRYPOINT ["strata", "serve"]
