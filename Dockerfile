# syntax=docker/dockerfile:1
#
# mpgate as a fully static binary in an otherwise empty image.
#
#   docker build -t mpgate:0.1.0 .
#   docker buildx build --platform linux/amd64,linux/arm64 -t REGISTRY/mpgate:0.1.0 --push .
#
# Sellers copy the binary into their own image (deploy/examples/seller-image/Dockerfile):
#   COPY --from=REGISTRY/mpgate:0.1.0 /mpgate /mpgate
#
# The builder stage runs on the target platform (under QEMU emulation when it is not the
# build host's), so Debian's native musl-tools of that platform compile aws-lc's C code.
# The Mozilla CA roots are compiled into the binary, so FROM scratch needs no CA bundle.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS builder
# Set by BuildKit from --platform (amd64 or arm64); amd64 when built without BuildKit.
ARG TARGETARCH
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src

RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools=1.2.3-1 \
 && rm -rf /var/lib/apt/lists/*

RUN case "${TARGETARCH:-amd64}" in \
      amd64) echo x86_64-unknown-linux-musl ;; \
      arm64) echo aarch64-unknown-linux-musl ;; \
      *) echo "unsupported TARGETARCH '${TARGETARCH}' (amd64 or arm64)" >&2; exit 1 ;; \
    esac > /rust-target \
 && rustup target add "$(cat /rust-target)"

COPY . .

# The caches keep downloaded crates and incremental output between builds; the binary is
# copied out of the cached target directory so the next stage can take it.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --target "$(cat /rust-target)" --bin mpgate \
 && cp "target/$(cat /rust-target)/release/mpgate" /mpgate \
 && if readelf -d /mpgate | grep NEEDED; then echo "/mpgate is not static" >&2; exit 1; fi \
 && /mpgate --version

FROM scratch
COPY --from=builder /mpgate /mpgate
COPY deploy/LICENSE /LICENSE
COPY deploy/NOTICE /NOTICE
# A numeric non-root user (distroless "nonroot"): scratch has no /etc/passwd, and
# Kubernetes' runAsNonRoot can only verify a numeric user.
USER 65532:65532
ENTRYPOINT ["/mpgate"]
