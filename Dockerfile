# The Strata broker image: `strata serve` as user 10001, data in /var/lib/strata.
#   docker build -t strata:0.1.0 .
# Build stage: the release binary. etcd-client's build script needs protoc; the codecs
# (lz4, zstd) and aws-lc build with the image's gcc.
FROM rust:1.95-slim-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler libprotobuf-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --locked --release -p strata-broker \
 && install -m 0755 target/release/strata /usr/local/bin/strata

# Runtime stage: Debian slim with CA certificates (HTTPS to S3 and STS) and bash (the
# Helm chart's start and preStop scripts).
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
