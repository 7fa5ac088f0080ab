# mpgate as a fully static binary in an otherwise empty image, for linux/amd64 and
# linux/arm64 (deploy/README.md):
#
#   docker buildx build --platform linux/amd64,linux/arm64 \
#     --provenance=false --sbom=false -t REGISTRY/mpgate:0.1.0 --push .
#
# --provenance=false --sbom=false: otherwise BuildKit adds attestation manifests (platform
# unknown/unknown) to the index, and AWS Marketplace refuses an image with them.
#
# A pinned build (docs/reference.md, "Key rotation, pinned builds and the proof for the
# workload"): the product code and a directory of public-key-v<N>.pem files are compiled in,
# and the binary refuses every runtime override:
#
#   docker buildx build --platform linux/amd64,linux/arm64 --provenance=false --sbom=false \
#     --build-arg MPGATE_PIN_PRODUCT_CODE=prod-abc123example \
#     --build-context marketplace-keys=./marketplace-keys \
#     -t REGISTRY/mpgate-pinned:0.1.0 --push .
#
# A pinned contract build compiles in the product ID and entitlements instead (and, if you
# want copies limited to the seats bought, the seat mode):
#
#   docker buildx build ... --build-arg MPGATE_PIN_PRODUCT_SKU=prod-sku-abc123example \
#     --build-arg MPGATE_PIN_ENTITLEMENTS=Basic,Seats=1 --build-arg MPGATE_PIN_SEAT=hold \
#     -t REGISTRY/mpgate-contract-pinned:0.1.0 --push .
#
# A pinned usage build (custom metering) compiles in the product code and the dimensions, and
# takes no keys (MeterUsage answers with no signed token):
#
#   docker buildx build ... --build-arg MPGATE_PIN_PRICING=usage \
#     --build-arg MPGATE_PIN_PRODUCT_CODE=prod-abc123example \
#     --build-arg MPGATE_PIN_DIMENSIONS=nodes,gb_scanned \
#     -t REGISTRY/mpgate-usage-pinned:0.1.0 --push .
#
# The builder runs on the build machine's own platform ($BUILDPLATFORM) and cross-compiles,
# as scripts/check-static.sh does: x86_64 with Debian's musl-tools (so an amd64 builder),
# aarch64 with cargo-zigbuild (zig as the C compiler and linker) from either. No stage runs
# under QEMU. The Mozilla CA roots are compiled into the binary, so FROM scratch needs no CA
# bundle.

# No `# syntax=` line: Docker's built-in Dockerfile frontend builds this file, so a build
# needs no image from a registry beyond the builder's own.
#
# Where /mpgate comes from: the builder stage below (the default), or, with
# --build-arg MPGATE_BINARY=prebuilt, a static binary built beforehand and staged as
# target/image/<amd64|arm64>/mpgate (scripts/container-test.sh does this: no registry, no
# rust image). Either way the image is the same runtime stage at the end of this file.
ARG MPGATE_BINARY=builder

# The pinned build's keys. Empty by default (an unpinned build); replace it with
# --build-context marketplace-keys=DIR (a directory of public-key-v<N>.pem files).
FROM scratch AS marketplace-keys

# Pinned by digest (the multi-platform index; see the current one with
# `docker buildx imagetools inspect rust:1.95-bookworm`).
FROM --platform=$BUILDPLATFORM rust:1.95-bookworm@sha256:6258907abe69656e41cd992e0b705cdcfabcbbe3db374f92ed2d47121282d4a1 AS builder
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src

# musl-tools: the C compiler for aws-lc on x86_64. python3-venv: for zig and cargo-zigbuild
# (PyPI), the cross toolchain for aarch64.
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools=1.2.3-1 python3-venv=3.11.2-1+b1 \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/zig \
 && /opt/zig/bin/pip install --no-cache-dir --disable-pip-version-check ziglang==0.17.1 cargo-zigbuild==0.24.1 \
 && rustup target add x86_64-unknown-linux-musl aarch64-unknown-linux-musl
# cargo-zigbuild finds zig through the venv's python (`python -m ziglang`).
ENV PATH=/opt/zig/bin:$PATH

# Only what cargo compiles (the .dockerignore lets in nothing else).
COPY Cargo.toml Cargo.lock build.rs ./
COPY .cargo/ .cargo/
COPY build/ build/
COPY crates/ crates/
COPY src/ src/

# Set by BuildKit from --platform: the image's architecture and the builder's own.
ARG TARGETARCH
ARG BUILDARCH
# Empty: an unpinned build. Set (with the marketplace-keys context): a pinned build. The
# contract pins reach build.rs as environment variables, as build arguments do in RUN.
ARG MPGATE_PIN_PRODUCT_CODE=""
ARG MPGATE_PIN_PRODUCT_SKU=""
ARG MPGATE_PIN_ENTITLEMENTS=""
ARG MPGATE_PIN_SEAT=""
ARG MPGATE_PIN_PRICING=""
ARG MPGATE_PIN_DIMENSIONS=""

# One target-directory cache per target architecture, so the amd64 and arm64 builds of a
# multi-platform build run side by side without waiting on each other's cargo lock. A
# product code or keys switch on the pin (MPGATE_PIN_KEY_DIR); half a pin (a code without
# keys, or keys without a code) fails in build.rs. The binary is copied out of the cache so
# the next stage can take it, and checked: the right machine, static, and (when native) it
# runs. A usage build pins no keys: keys given to one are a mistake, refused here.
RUN --mount=type=cache,id=mpgate-cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=mpgate-target-${TARGETARCH},target=/src/target \
    --mount=type=bind,from=marketplace-keys,target=/pin-keys \
    case "${TARGETARCH:-amd64}" in \
      amd64) triple=x86_64-unknown-linux-musl machine=X86-64 ;; \
      arm64) triple=aarch64-unknown-linux-musl machine=AArch64 ;; \
      *) echo "unsupported TARGETARCH '${TARGETARCH}' (amd64 or arm64)" >&2; exit 1 ;; \
    esac \
 && if [ "$MPGATE_PIN_PRICING" = usage ]; then \
      if [ -n "$(ls -A /pin-keys)" ]; then echo "MPGATE_PIN_PRICING=usage takes no keys: drop --build-context marketplace-keys" >&2; exit 1; fi; \
    elif [ -n "$MPGATE_PIN_PRODUCT_CODE" ] || [ -n "$(ls -A /pin-keys)" ]; then \
      export MPGATE_PIN_KEY_DIR=/pin-keys; \
    fi \
 && if [ "$triple" = aarch64-unknown-linux-musl ]; then \
      cargo zigbuild --release --locked --target "$triple" --bin mpgate; \
    elif [ "${BUILDARCH:-amd64}" = amd64 ]; then \
      cargo build --release --locked --target "$triple" --bin mpgate; \
    else \
      echo "linux/amd64 is built on an amd64 builder (musl-tools; zig's linker refuses -z pack-relative-relocs): add an amd64 node to the builder, see docs/deploy-reference.md, The mpgate image" >&2; exit 1; \
    fi \
 && install -D -m 0755 "target/$triple/release/mpgate" /out/mpgate \
 && readelf -h /out/mpgate | grep -q "Machine:.*$machine" \
 && if readelf -l /out/mpgate | grep -q INTERP; then echo "/out/mpgate is not static" >&2; exit 1; fi \
 && if [ "$TARGETARCH" = "$BUILDARCH" ]; then /out/mpgate --version; fi

# A binary built outside Docker (cargo build --release --target <arch>-unknown-linux-musl),
# copied into the context by the caller; the .dockerignore lets in target/image/ only.
FROM scratch AS prebuilt
ARG TARGETARCH
COPY target/image/${TARGETARCH}/mpgate /out/mpgate

# The stage /mpgate is taken from: builder or prebuilt (a stage name in a variable, because
# COPY --from does not expand build arguments).
# hadolint ignore=DL3006
# checkov:skip=CKV_DOCKER_7: MPGATE_BINARY is a build argument naming a stage, not an image
FROM ${MPGATE_BINARY} AS binary

# The image: the binary, the licence files, a non-root user; nothing else.
FROM scratch AS runtime
ARG VERSION=0.1.0
ARG REVISION=""
LABEL org.opencontainers.image.title="mpgate" \
      org.opencontainers.image.description="AWS Marketplace entitlement gate: RegisterUsage, a verified token, then exec" \
      org.opencontainers.image.source="https://github.com/mpgate/mpgate" \
      org.opencontainers.image.url="https://github.com/mpgate/mpgate" \
      org.opencontainers.image.documentation="https://github.com/mpgate/mpgate/blob/main/deploy/README.md" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
COPY --from=binary /out/mpgate /mpgate
COPY deploy/LICENSE /LICENSE
COPY deploy/NOTICE /NOTICE
# A numeric non-root user (distroless "nonroot"): scratch has no /etc/passwd, and
# Kubernetes' runAsNonRoot can only verify a numeric user.
USER 65532:65532
# A one-shot gate has nothing to probe (it exits 0 or with a code); ECS and Kubernetes
# ignore an image HEALTHCHECK anyway.
HEALTHCHECK NONE
ENTRYPOINT ["/mpgate"]
